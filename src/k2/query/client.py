"""``K2Client``: the k2 API over HTTP, answering Arrow tables; ``render`` shows one in a terminal.

The client always asks for the Arrow IPC stream, so types survive the trip (timestamps stay
``timestamp[us, UTC]``, ids stay int64) and the coverage travels inside the stream's schema
metadata (``k2.coverage``). Each query method returns ``(table, coverage)``; whether the page
was truncated and its continuation cursor stay in the table's metadata (``page_info``).

Refusals come back as k2's own errors: 400 -> ``QueryRejected(reason, detail)``, 408 ->
``QueryTimeout``, anything else non-2xx -> ``K2Error`` with the status and the server's reason.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from typing import Any

import httpx
import pyarrow as pa
from rich.table import Table

from k2.errors import K2Error, QueryRejected, QueryTimeout

__all__ = ["K2Client", "page_info", "render"]

_ARROW = "application/vnd.apache.arrow.stream"
_COVERAGE_KEY = b"k2.coverage"

Answer = tuple[pa.Table, dict[str, Any]]


class K2Client:
    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        """``http``: an existing client to send through (tests pass FastAPI's ``TestClient``)."""
        headers = {"Accept": _ARROW}
        if api_key:
            headers["X-API-Key"] = api_key
        self._owned = http is None
        self._http = http if http is not None else httpx.Client(base_url=base_url, timeout=timeout_s)
        self._base = base_url.rstrip("/")
        self._headers = headers

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def __enter__(self) -> K2Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def trades(self, **params: Any) -> Answer:
        """``symbol``, ``exchange``, ``start``/``end`` (datetimes), ``day``, ``last``, ``limit``,
        ``cursor``, ``as_of``: as the ``/v1/trades`` query parameters."""
        return self._rows("GET", "/v1/trades", params)

    def quotes(self, **params: Any) -> Answer:
        return self._rows("GET", "/v1/quotes", params)

    def bars(self, symbol: str, interval: str = "1-MINUTE-LAST", **params: Any) -> Answer:
        return self._rows("GET", "/v1/bars", {"symbol": symbol, "interval": interval, **params})

    def vwap(self, symbols: list[str] | None = None, **params: Any) -> Answer:
        return self._rows("GET", "/v1/vwap", {"symbols": _join(symbols), **params})

    def snapshot(self, symbols: list[str] | None = None, exchange: str | None = None) -> Answer:
        return self._rows("GET", "/v1/snapshot", {"symbols": _join(symbols), "exchange": exchange})

    def gaps(self, **params: Any) -> Answer:
        return self._rows("GET", "/v1/gaps", params)

    def sql(self, text: str, max_rows: int | None = None) -> Answer:
        body: dict[str, Any] = {"sql": text}
        if max_rows is not None:
            body["max_rows"] = max_rows
        return self._rows("POST", "/v1/sql", {}, body)

    def status(self) -> dict[str, Any]:
        """The platform status (JSON: not a table)."""
        response = self._send("GET", "/v1/status", {}, None, accept="application/json")
        status: dict[str, Any] = response.json()
        return status

    def _rows(self, method: str, path: str, params: dict[str, Any], body: Any = None) -> Answer:
        response = self._send(method, path, params, body, accept=_ARROW)
        table = pa.ipc.open_stream(response.content).read_all()
        raw = (table.schema.metadata or {}).get(_COVERAGE_KEY)
        coverage: dict[str, Any] = json.loads(raw) if raw else {}
        return table, coverage

    def _send(
        self, method: str, path: str, params: dict[str, Any], body: Any, *, accept: str
    ) -> httpx.Response:
        query = {k: _param(v) for k, v in params.items() if v is not None}
        response = self._http.request(
            method,
            self._base + path,
            params=query,
            json=body,
            headers={**self._headers, "Accept": accept},
        )
        if response.is_success:
            return response
        raise _error(response)


def page_info(table: pa.Table) -> tuple[bool, str | None]:
    """``(truncated, next_cursor)`` of a table the client returned."""
    metadata = table.schema.metadata or {}
    cursor = metadata.get(b"k2.next_cursor")
    return metadata.get(b"k2.truncated") == b"true", cursor.decode() if cursor else None


def render(table: pa.Table, coverage: dict[str, Any], *, max_rows: int = 200) -> Table:
    """A rich ``Table`` of the rows, captioned with what they cover."""
    out = Table(caption=_coverage_caption(table, coverage), caption_justify="left")
    for field in table.schema:
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
        out.add_column(field.name, justify="right" if numeric else "left", no_wrap=True)
    for row in table.slice(0, max_rows).to_pylist():
        out.add_row(*(_cell(v) for v in row.values()))
    if table.num_rows > max_rows:
        out.add_row(*([f"… {table.num_rows - max_rows} more rows"] + [""] * (table.num_columns - 1)))
    return out


def _coverage_caption(table: pa.Table, coverage: dict[str, Any]) -> str:
    parts = [f"{table.num_rows} rows"]
    snapshots = coverage.get("snapshots") or {}
    if snapshots:
        parts.append("snapshots " + ", ".join(f"{t}@{s}" for t, s in sorted(snapshots.items())))
    if coverage.get("as_of"):
        parts.append(f"as of {coverage['as_of']}")
    if coverage.get("complete", True):
        parts.append("[green]complete[/green]")
    else:
        missing = []
        if coverage.get("live_missing"):
            missing.append("live missing: " + ", ".join(coverage["live_missing"]))
        if coverage.get("deferred"):
            missing.append(f"{len(coverage['deferred'])} deferred ranges")
        if coverage.get("open_gaps"):
            missing.append(f"{coverage['open_gaps']} open gaps")
        parts.append("[yellow]incomplete[/yellow] (" + "; ".join(missing) + ")")
    if coverage.get("level_name"):
        parts.append(f"ingest {coverage['level_name']}")
    truncated, cursor = page_info(table)
    if truncated:
        parts.append(f"truncated; next cursor {cursor}" if cursor else "truncated")
    return " · ".join(parts)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value)
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) >= 1e6 or value == 0 else f"{value:.6f}".rstrip("0").rstrip(".")
    return str(value)


def _param(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _join(symbols: list[str] | None) -> str | None:
    return ",".join(symbols) if symbols else None


def _error(response: httpx.Response) -> K2Error:
    try:
        body = response.json()
        reason, detail = str(body.get("error", "")), body.get("detail", "")
    except (ValueError, AttributeError):
        reason, detail = "", response.text[:200]
    if response.status_code == 400:
        return QueryRejected(reason or "bad_request", str(detail))
    if response.status_code == 408:
        match = re.search(r"after ([0-9.]+) s", str(detail))
        return QueryTimeout(float(match.group(1)) if match else 0.0)
    return K2Error(
        f"{response.request.method} {response.request.url.path}: {response.status_code} {reason}: {detail}"
    )
