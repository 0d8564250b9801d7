"""The API's side of the live read: ask every ingest process for its buffered rows, in parallel.

An answer is history plus whatever live pieces arrived in time; an endpoint that is down, slow or
behind an open breaker is named in ``LiveFetch.failed`` (the caller reports its partitions as
missing) and never delays the answer beyond about ``LiveSettings.timeout_s``: every call carries
that gRPC deadline, and the caller stops waiting shortly after it regardless.

Each endpoint keeps one Flight client (a gRPC channel, thread-safe) and one pybreaker breaker
across calls. The RPC runs outside the breaker and only its outcome is replayed through it:
pybreaker 1.4 holds the breaker's lock for the whole guarded call, so guarding the RPC itself
would queue every concurrent query to one endpoint behind a single hanging call.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as fl
import pybreaker

from k2.config import LiveSettings
from k2.live_protocol import PING_ACTION, LiveTicket, PartitionLive, decode_coverage
from k2.logs import get_logger

__all__ = ["BREAKER_OPEN", "LiveClient", "LiveFetch", "LivePiece", "endpoints_from_status"]

BREAKER_OPEN = "breaker open"
# How long past the gRPC deadline the caller still waits for a worker to report (scheduling slack).
_GRACE_S = 0.25

_log = get_logger("live_client")


@dataclass(slots=True)
class LivePiece:
    """One endpoint's answer: its matching rows and the offsets they cover."""

    endpoint: str
    table: pa.Table
    partitions: dict[int, PartitionLive]
    process: dict[str, Any]


@dataclass(slots=True)
class LiveFetch:
    """The pieces that arrived, and endpoint -> reason for those that did not."""

    pieces: list[LivePiece] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class LiveClient:
    """Fetches one table's live rows from every discovered ingest endpoint.

    ``discover`` is called on every fetch (endpoints come and go with ingest processes), e.g.
    ``lambda: endpoints_from_status(dir, settings.endpoints, settings.stale_after_s, time.time())``.
    """

    def __init__(
        self, settings: LiveSettings, discover: Callable[[], list[str]], max_workers: int = 8
    ) -> None:
        self._settings = settings
        self._discover = discover
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="k2-live")
        self._lock = threading.Lock()
        self._endpoints: dict[str, _Endpoint] = {}

    def fetch(
        self,
        table: str,
        symbols: Iterable[str] | None = None,
        start_us: int | None = None,
        end_us: int | None = None,
        columns: Iterable[str] | None = None,
        last: int | None = None,
    ) -> LiveFetch:
        """Rows of ``table`` with ``symbol`` in ``symbols`` and ``ts`` in ``[start_us, end_us)``
        (None: no bound), projected to ``columns``, from every endpoint that answers in time."""
        ticket = LiveTicket(
            table=table,
            symbols=None if symbols is None else tuple(symbols),
            start_us=start_us,
            end_us=end_us,
            columns=None if columns is None else tuple(columns),
            last=last,
        ).encode()
        result = LiveFetch()
        asked: dict[str, Future[LivePiece]] = {}
        for endpoint in self._current():
            if endpoint.admits():
                asked[endpoint.location] = self._pool.submit(endpoint.get, ticket, self._settings.timeout_s)
            else:
                result.failed[endpoint.location] = BREAKER_OPEN
        wait(asked.values(), timeout=self._settings.timeout_s + _GRACE_S)
        for location, future in asked.items():
            if not future.done():
                # Not started yet: never will be. Running: the worker still records the outcome in
                # the breaker when its gRPC deadline passes.
                future.cancel()
                result.failed[location] = f"no answer in {self._settings.timeout_s:g} s"
            elif (error := future.exception()) is not None:
                result.failed[location] = _reason(error)
            else:
                result.pieces.append(future.result())
        for location, reason in result.failed.items():
            _log.warning("live_endpoint_failed", endpoint=location, table=table, reason=reason)
        return result

    def ping_all(self) -> dict[str, dict[str, Any] | str]:
        """Endpoint -> its process facts, or why it did not answer (for status pages).

        A ping bypasses the breakers, so it shows whether the endpoint is up right now.
        """
        asked = {e.location: self._pool.submit(e.ping, self._settings.timeout_s) for e in self._current()}
        wait(asked.values(), timeout=self._settings.timeout_s + _GRACE_S)
        out: dict[str, dict[str, Any] | str] = {}
        for location, future in asked.items():
            if not future.done():
                out[location] = f"no answer in {self._settings.timeout_s:g} s"
            elif (error := future.exception()) is not None:
                out[location] = _reason(error)
            else:
                out[location] = future.result()
        return out

    def breaker_states(self) -> dict[str, str]:
        """Endpoint -> ``closed``, ``open`` or ``half-open``, for the endpoints known so far."""
        with self._lock:
            return {loc: e.breaker.current_state for loc, e in self._endpoints.items()}

    def close(self) -> None:
        """Stop the worker threads (calls in flight end at their deadline) and drop the clients."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            self._endpoints.clear()

    def _current(self) -> list[_Endpoint]:
        """The endpoints discovered now; forgets the rest (ingest restarts get new ports)."""
        locations = list(dict.fromkeys(self._discover()))
        with self._lock:
            self._endpoints = {
                loc: self._endpoints.get(loc) or _Endpoint(loc, self._settings) for loc in locations
            }
            return list(self._endpoints.values())


class _Endpoint:
    def __init__(self, location: str, settings: LiveSettings) -> None:
        self.location = location
        self._client: fl.FlightClient | None = None
        self._client_lock = threading.Lock()
        self._storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self.breaker = pybreaker.CircuitBreaker(
            fail_max=settings.breaker_failures,
            reset_timeout=settings.breaker_reset_s,
            # A rejected ticket is the caller's bug; the endpoint that rejected it is healthy.
            exclude=[pa.ArrowInvalid],
            listeners=[_BreakerLog()],
            state_storage=self._storage,
            name=location,
            throw_new_error_on_trip=False,
        )

    def admits(self) -> bool:
        """False while the breaker is open and its reset timeout has not passed."""
        if self.breaker.current_state != pybreaker.STATE_OPEN:
            return True
        opened_at = self._storage.opened_at
        reset = timedelta(seconds=self.breaker.reset_timeout)
        return opened_at is None or datetime.now(UTC) >= opened_at + reset

    def get(self, ticket: bytes, timeout_s: float) -> LivePiece:
        try:
            reader = self._connected().do_get(fl.Ticket(ticket), fl.FlightCallOptions(timeout=timeout_s))
            table = reader.read_all()
            partitions, process = decode_coverage(table.schema)
        except Exception as e:
            self._record(e)
            raise
        self._record(None)
        return LivePiece(self.location, table.replace_schema_metadata(None), partitions, process)

    def ping(self, timeout_s: float) -> dict[str, Any]:
        options = fl.FlightCallOptions(timeout=timeout_s)
        results = list(self._connected().do_action(fl.Action(PING_ACTION, b""), options))
        facts = json.loads(results[0].body.to_pybytes()) if results else {}
        if not isinstance(facts, dict):
            raise ValueError("ping answer is not a JSON object")
        return facts

    def _connected(self) -> fl.FlightClient:
        # gRPC connects lazily, so this never blocks; a malformed location raises here.
        with self._client_lock:
            if self._client is None:
                self._client = fl.FlightClient(self.location)
            return self._client

    def _record(self, error: Exception | None) -> None:
        """Replay one call's outcome through the breaker (see the module docstring for why)."""
        try:
            self.breaker.call(_replay, error)
        except pybreaker.CircuitBreakerError:
            pass  # opened by a concurrent call meanwhile: this outcome changes nothing
        except Exception as e:
            if e is not error:
                raise


def _replay(error: Exception | None) -> None:
    if error is not None:
        raise error


class _BreakerLog(pybreaker.CircuitBreakerListener):
    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        _log.warning(
            "live_breaker_state",
            endpoint=cb.name,
            old=getattr(old_state, "name", None),
            new=getattr(new_state, "name", None),
        )


def _reason(error: BaseException) -> str:
    """A one-line reason: Flight appends the server traceback and gRPC debug context to messages."""
    text = str(error).split("\n", 1)[0]
    for noise in (". Detail: Python exception", ". gRPC client debug context"):
        text = text.split(noise, 1)[0]
    return f"{type(error).__name__}: {text}"


def endpoints_from_status(status_dir: Path, extra: list[str], stale_after_s: float, now: float) -> list[str]:
    """Live endpoints advertised in ingest status files updated within ``stale_after_s`` of ``now``
    (epoch seconds), then ``extra``; without repeats. Unreadable files are skipped (a process may
    be replacing its file right now; it will be read on the next query)."""
    found: list[str] = []
    for path in sorted(status_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            _log.debug("status_file_unreadable", path=str(path), error=repr(e))
            continue
        if not isinstance(doc, dict):
            continue
        endpoint = doc.get("live_endpoint")
        updated_at = doc.get("updated_at")
        if not isinstance(endpoint, str) or not endpoint:
            continue
        if not isinstance(updated_at, int | float) or isinstance(updated_at, bool):
            continue
        if now - updated_at > stale_after_s:
            continue
        found.append(endpoint)
    return list(dict.fromkeys([*found, *extra]))
