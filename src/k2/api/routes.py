"""``/v1``: the questions k2 answers, forwarded to a ``Queries`` engine.

Endpoints are plain ``def``: FastAPI runs them in its thread pool, so a blocking engine call (a
DuckDB scan, a live-buffer fetch) never stalls the event loop and ``/health`` keeps answering.
The format is settled before the engine runs, so an unacceptable ``Accept`` costs no query.
Every answer is capped at ``max_rows`` here as well as in the engine, setting ``truncated``.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations, and
# ``limit``/``last`` are bounded by settings, so their annotations are built per app below.

import re
from collections.abc import Callable
from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import AwareDatetime, BeforeValidator
from starlette.responses import JSONResponse, Response

from k2.api.error_responses import error_response
from k2.api.formats import Format, encode, json_safe, negotiate
from k2.api.guard import API_KEY_HEADER
from k2.api.schemas import (
    BARS_EXAMPLE,
    GAPS_EXAMPLE,
    QUOTES_EXAMPLE,
    SNAPSHOT_EXAMPLE,
    TRADES_EXAMPLE,
    VWAP_EXAMPLE,
    SqlRequest,
    data_responses,
    status_responses,
)
from k2.config import ApiSettings
from k2.errors import QueryRejected
from k2.observability import Metrics
from k2.query.result import QueryResult
from k2.query.spec import AsOf, BarInterval, Queries, TimeRange

__all__ = ["v1_router"]

_FORMATS = [f.value for f in Format]

Symbol = Annotated[
    str | None,
    Query(max_length=64, description="Instrument symbol as the exchange lists it.", examples=["BHP"]),
]
Symbols = Annotated[
    str | None,
    Query(
        max_length=4096,
        description="Comma-separated symbols; omit for all.",
        examples=["BHP,CBA,RIO"],
    ),
]
Exchange = Annotated[
    str | None,
    Query(max_length=16, description="Exchange code (MIC-like, e.g. ASX).", examples=["ASX"]),
]
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _iso_only(pattern: re.Pattern[str], example: str) -> Callable[[object], object]:
    # Pydantic would also read "1394496000" (or "0.5") as a Unix time: a trader's typo, not a time.
    def check(value: object) -> object:
        if isinstance(value, str) and not pattern.match(value):
            raise ValueError(f"expected ISO-8601, e.g. {example}")
        return value

    return check


IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_only(_ISO_TIME, "2014-03-11T00:00:00Z"))]
IsoDate = Annotated[date, BeforeValidator(_iso_only(_ISO_DATE, "2014-03-11"))]

Start = Annotated[
    IsoTime | None,
    Query(description="UTC start, inclusive (ISO-8601 with offset).", examples=["2014-03-11T00:00:00Z"]),
]
End = Annotated[
    IsoTime | None,
    Query(description="UTC end, exclusive (ISO-8601 with offset).", examples=["2014-03-11T06:00:00Z"]),
]
Day = Annotated[
    IsoDate | None,
    Query(
        description="Exchange-local trading day (YYYY-MM-DD): the session, whatever UTC days it spans.",
        examples=["2014-03-11"],
    ),
]
Cursor = Annotated[
    str | None,
    Query(max_length=1024, description="next_cursor of the previous page.", examples=["eyJ0cyI6MTM5NH0"]),
]
AsOfParam = Annotated[
    str | None,
    Query(
        max_length=64,
        pattern=r"^\s*(-?\d{6,}|\d{4}-\d{2}-\d{2}T.+)\s*$",
        description="Time travel: an Iceberg snapshot id, or an ISO-8601 time with offset "
        "(history only: no live part).",
        examples=["2014-03-11T03:00:00Z"],
    ),
]
FormatParam = Annotated[
    str | None,
    Query(
        description="json (default), csv, arrow (Arrow IPC stream) or parquet; overrides Accept. "
        "Anything else: 400 unknown_format.",
        examples=["json"],
        json_schema_extra={"enum": _FORMATS},
    ),
]
GapStatus = Annotated[
    str | None,
    Query(max_length=32, description="Gap status, e.g. open or filled.", examples=["open"]),
]


def v1_router(engine: Queries, settings: ApiSettings, metrics: Metrics) -> APIRouter:
    # Documents X-API-Key in OpenAPI; GuardMiddleware enforces it, ahead of body parsing.
    dependencies = (
        [Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False))] if settings.api_keys else []
    )
    router = APIRouter(prefix="/v1", tags=["v1"], dependencies=dependencies)
    max_rows = settings.max_rows

    limit_query = Query(
        ge=1,
        le=max_rows,
        description=f"Rows per page (default {settings.default_limit}, at most {max_rows}).",
        examples=[100],
    )
    last_query = Query(
        ge=1, le=max_rows, description="Only the newest N rows (still oldest first).", examples=[10]
    )

    def answer(request: Request, format: str | None, run: Callable[[], QueryResult]) -> Response:
        fmt = negotiate(format, request.headers.get("accept"))
        if fmt is None:
            return error_response(
                406,
                "not_acceptable",
                f"Accept: {request.headers.get('accept')!r} admits none of "
                + ", ".join(f.media_type for f in Format),
            )
        return encode(_capped(run(), max_rows), fmt)

    def limit_or_default(limit: int | None) -> int:
        return limit if limit is not None else min(settings.default_limit, max_rows)

    @router.get(
        "/trades",
        summary="Trades",
        description="Trades in time order, history ∪ live. Select by symbol/exchange and a UTC "
        "range or a trading day; `last=N` gives the newest N. Page with `cursor`.",
        responses=data_responses(TRADES_EXAMPLE),
    )
    def trades(
        request: Request,
        symbol: Symbol = None,
        exchange: Exchange = None,
        start: Start = None,
        end: End = None,
        day: Day = None,
        last: Annotated[int | None, last_query] = None,
        limit: Annotated[int | None, limit_query] = None,
        cursor: Cursor = None,
        as_of: AsOfParam = None,
        format: FormatParam = None,
    ) -> Response:
        return answer(
            request,
            format,
            lambda: engine.trades(
                symbol=symbol,
                exchange=exchange,
                when=TimeRange(start=start, end=end, day=day),
                last=last,
                limit=limit_or_default(limit),
                cursor=cursor,
                as_of=_as_of(as_of),
            ),
        )

    @router.get(
        "/quotes",
        summary="Quotes",
        description="Quotes (best bid/ask and sizes) in time order, history ∪ live; same selection "
        "and paging as /v1/trades.",
        responses=data_responses(QUOTES_EXAMPLE),
    )
    def quotes(
        request: Request,
        symbol: Symbol = None,
        exchange: Exchange = None,
        start: Start = None,
        end: End = None,
        day: Day = None,
        last: Annotated[int | None, last_query] = None,
        limit: Annotated[int | None, limit_query] = None,
        cursor: Cursor = None,
        as_of: AsOfParam = None,
        format: FormatParam = None,
    ) -> Response:
        return answer(
            request,
            format,
            lambda: engine.quotes(
                symbol=symbol,
                exchange=exchange,
                when=TimeRange(start=start, end=end, day=day),
                last=last,
                limit=limit_or_default(limit),
                cursor=cursor,
                as_of=_as_of(as_of),
            ),
        )

    @router.get(
        "/bars",
        summary="OHLCV bars",
        description="Bars of one symbol's trades: bar_start (UTC), trading_day, open/high/low/close, "
        "volume, vwap, trades. `1-DAY-LAST` buckets by trading day.",
        responses=data_responses(BARS_EXAMPLE),
    )
    def bars(
        request: Request,
        symbol: Annotated[
            str, Query(min_length=1, max_length=64, description="Instrument symbol.", examples=["BHP"])
        ],
        interval: Annotated[
            BarInterval, Query(description="Bar width and price rule.", examples=["1-MINUTE-LAST"])
        ] = BarInterval.MINUTE_1,
        exchange: Exchange = None,
        start: Start = None,
        end: End = None,
        day: Day = None,
        limit: Annotated[int | None, limit_query] = None,
        as_of: AsOfParam = None,
        format: FormatParam = None,
    ) -> Response:
        return answer(
            request,
            format,
            lambda: engine.bars(
                symbol=symbol,
                exchange=exchange,
                interval=interval,
                when=TimeRange(start=start, end=end, day=day),
                limit=limit_or_default(limit),
                as_of=_as_of(as_of),
            ),
        )

    @router.get(
        "/vwap",
        summary="Volume-weighted average price",
        description="VWAP per symbol and trading day over the range, history ∪ live.",
        responses=data_responses(VWAP_EXAMPLE),
    )
    def vwap(
        request: Request,
        symbols: Symbols = None,
        exchange: Exchange = None,
        start: Start = None,
        end: End = None,
        day: Day = None,
        as_of: AsOfParam = None,
        format: FormatParam = None,
    ) -> Response:
        return answer(
            request,
            format,
            lambda: engine.vwap(
                symbols=_symbol_list(symbols),
                exchange=exchange,
                when=TimeRange(start=start, end=end, day=day),
                as_of=_as_of(as_of),
            ),
        )

    @router.get(
        "/snapshot",
        summary="Last trade and quote per symbol",
        description="Per symbol: the last trade and the last best bid/ask, history ∪ live.",
        responses=data_responses(SNAPSHOT_EXAMPLE),
    )
    def snapshot(
        request: Request, symbols: Symbols = None, exchange: Exchange = None, format: FormatParam = None
    ) -> Response:
        return answer(
            request, format, lambda: engine.snapshot(symbols=_symbol_list(symbols), exchange=exchange)
        )

    @router.get(
        "/gaps",
        summary="Sequence gaps",
        description="Rows of sequence_gaps: where an exchange sequence skipped, and whether filled.",
        responses=data_responses(GAPS_EXAMPLE),
    )
    def gaps(
        request: Request,
        symbol: Symbol = None,
        exchange: Exchange = None,
        status: GapStatus = None,
        limit: Annotated[int | None, limit_query] = None,
        format: FormatParam = None,
    ) -> Response:
        return answer(
            request,
            format,
            lambda: engine.gaps(
                symbol=symbol, exchange=exchange, status=status, limit=limit_or_default(limit)
            ),
        )

    @router.get(
        "/status",
        summary="Platform status",
        description="Ingest processes, their degradation levels, lag and pending backfill; tables "
        "and their snapshots.",
        responses=status_responses({"ingest": [{"process": 0, "level": "NORMAL", "lag": 12}]}),
    )
    def status() -> JSONResponse:
        return JSONResponse(json_safe(engine.status()))

    @router.post(
        "/sql",
        summary="Sandboxed SQL",
        description="One read-only SELECT over trades, quotes, reference_data and sequence_gaps "
        f"(history ∪ live). At most {settings.max_sql_chars} characters and {max_rows} rows; "
        f"interrupted after {settings.sql_timeout_s:g} s (408).",
        responses=data_responses(VWAP_EXAMPLE),
    )
    def sql(request: Request, body: SqlRequest, format: FormatParam = None) -> Response:
        def run() -> QueryResult:
            try:
                if len(body.sql) > settings.max_sql_chars:
                    raise QueryRejected(
                        "too_long", f"{len(body.sql)} characters; at most {settings.max_sql_chars}"
                    )
                if not body.sql.strip():
                    raise QueryRejected("empty", "sql is empty")
                return engine.sql(body.sql, max_rows=min(body.max_rows or max_rows, max_rows))
            except QueryRejected as exc:
                metrics.api_sql_rejected.labels(reason=exc.reason).inc()
                raise

        return answer(request, format, run)

    return router


def _as_of(text: str | None) -> AsOf | None:
    return AsOf.parse(text) if text is not None and text.strip() else None


def _symbol_list(text: str | None) -> list[str] | None:
    if text is None:
        return None
    symbols = [s.strip() for s in text.split(",") if s.strip()]
    return symbols or None


def _capped(result: QueryResult, max_rows: int) -> QueryResult:
    if result.rows.num_rows <= max_rows:
        return result
    return QueryResult(
        rows=result.rows.slice(0, max_rows),
        coverage=result.coverage,
        truncated=True,
        # The engine's cursor continues after *its* last row, not ours: no cursor beats a skip.
        next_cursor=None,
    )
