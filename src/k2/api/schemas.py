"""The HTTP shapes of ``/v1``: request bodies, JSON answers, and the examples OpenAPI shows.

These models document and validate; the answers themselves are written by ``formats`` (JSON rows
are converted column by column from Arrow, not through these models, to stay fast).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from k2.api.error_responses import ErrorBody

__all__ = [
    "CoverageBody",
    "DeferredRangeBody",
    "RowsBody",
    "SqlRequest",
    "data_responses",
    "status_responses",
]


class SqlRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "sql": "SELECT symbol, count(*) AS trades, sum(qty) AS volume FROM trades "
                    "WHERE session = 20140311 GROUP BY symbol ORDER BY volume DESC",
                    "max_rows": 100,
                }
            ]
        },
    )

    sql: str = Field(
        description="One read-only SELECT over the views trades, quotes, reference_data and "
        "sequence_gaps (each history ∪ live). Longer than the server's max_sql_chars: 400 too_long."
    )
    max_rows: int | None = Field(
        default=None, ge=1, description="Rows to return at most; capped by the server's max_rows."
    )


class DeferredRangeBody(BaseModel):
    topic: str
    partition: int
    first: int
    last: int


class CoverageBody(BaseModel):
    """What the rows cover: ``Coverage.to_json()``."""

    snapshots: dict[str, str | None] = Field(
        description="Table -> Iceberg snapshot id (a string: 64-bit) the history part was read at."
    )
    live_from: dict[str, dict[str, int]] = Field(
        description="Table -> Kafka partition -> first offset taken from the live buffers."
    )
    live_missing: list[str] = Field(description="'table/partition' whose live part is missing.")
    endpoints_asked: int
    endpoints_answered: int
    level: int | None = Field(description="Highest ingest degradation level among those that answered.")
    level_name: str | None
    deferred: list[DeferredRangeBody] = Field(description="Offsets shed and not yet backfilled.")
    open_gaps: int
    as_of: str | None = Field(description="The time-travel point asked for, if any (no live part then).")
    complete: bool = Field(description="Nothing in range is missing, deferred or gapped.")


class RowsBody(BaseModel):
    rows: list[dict[str, Any]] = Field(
        description="One object per row. Timestamps are ISO-8601 UTC strings, integer ids "
        "(seq, kafka_offset, *_id) strings, NaN null."
    )
    coverage: CoverageBody
    truncated: bool = Field(description="More rows matched than the limit allowed.")
    next_cursor: str | None = Field(description="Pass as ?cursor= to continue after the last row.")


_COVERAGE_EXAMPLE: dict[str, Any] = {
    "snapshots": {"trades": "4586712930015577412"},
    "live_from": {"trades": {"0": 1204, "1": 1187}},
    "live_missing": [],
    "endpoints_asked": 2,
    "endpoints_answered": 2,
    "level": 0,
    "level_name": "NORMAL",
    "deferred": [],
    "open_gaps": 0,
    "as_of": None,
    "complete": True,
}
TRADES_EXAMPLE: dict[str, Any] = {
    "rows": [
        {
            "exchange": "ASX",
            "symbol": "BHP",
            "session": "2014-03-11",
            "seq": "10452",
            "ts": "2014-03-11T00:00:01.250000Z",
            "price": 36.52,
            "qty": 500,
            "conditions": ["XT"],
            "trade_id": "BHP-10452",
            "venue": "ASX",
            "ingest_ts": "2014-03-11T00:00:01.251900Z",
            "kafka_partition": 3,
            "kafka_offset": "1187",
        }
    ],
    "coverage": _COVERAGE_EXAMPLE,
    "truncated": False,
    "next_cursor": "eyJ0cyI6MTM5NDQ5NjAwMTI1MDAwMCwic2VxIjoxMDQ1Mn0",
}
BARS_EXAMPLE: dict[str, Any] = {
    "rows": [
        {
            "bar_start": "2014-03-11T00:00:00Z",
            "trading_day": "2014-03-11",
            "open": 36.50,
            "high": 36.58,
            "low": 36.47,
            "close": 36.52,
            "volume": 182_400,
            "vwap": 36.5231,
            "trades": 214,
        }
    ],
    "coverage": _COVERAGE_EXAMPLE,
    "truncated": False,
    "next_cursor": None,
}
VWAP_EXAMPLE: dict[str, Any] = {
    "rows": [{"symbol": "BHP", "trading_day": "2014-03-11", "vwap": 36.5172, "volume": 4_120_300}],
    "coverage": _COVERAGE_EXAMPLE,
    "truncated": False,
    "next_cursor": None,
}

QUOTES_EXAMPLE: dict[str, Any] = {
    "rows": [
        {
            "exchange": "ASX",
            "symbol": "BHP",
            "session": "2014-03-11",
            "seq": "20001",
            "ts": "2014-03-11T00:00:01.000000Z",
            "bid": 36.51,
            "ask": 36.53,
            "bid_size": 1_200,
            "ask_size": 800,
            "kafka_partition": 1,
            "kafka_offset": "77",
        }
    ],
    "coverage": _COVERAGE_EXAMPLE,
    "truncated": False,
    "next_cursor": None,
}
SNAPSHOT_EXAMPLE: dict[str, Any] = {
    "rows": [
        {
            "symbol": "BHP",
            "last_price": 36.51,
            "last_qty": 1_000,
            "last_ts": "2014-03-11T05:59:58.120000Z",
            "bid": 36.50,
            "ask": 36.52,
            "quote_ts": "2014-03-11T05:59:59.003000Z",
        }
    ],
    "coverage": _COVERAGE_EXAMPLE,
    "truncated": False,
    "next_cursor": None,
}
GAPS_EXAMPLE: dict[str, Any] = {
    "rows": [
        {
            "exchange": "ASX",
            "symbol": "BHP",
            "first_missing_seq": "10455",
            "last_missing_seq": "10460",
            "detected_at": "2014-03-11T00:00:05.000000Z",
            "status": "open",
        }
    ],
    "coverage": {**_COVERAGE_EXAMPLE, "open_gaps": 1, "complete": False},
    "truncated": False,
    "next_cursor": None,
}

_CSV_EXAMPLE = (
    '"exchange","symbol","session","seq","ts","price","qty","conditions","trade_id"\n'
    '"ASX","BHP",2014-03-11,10452,"2014-03-11T00:00:01.250000Z",36.52,500,"[""XT""]","BHP-10452"\n'
)
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_COVERAGE_HEADERS = {
    "X-K2-Coverage": {"description": "The coverage object as compact JSON.", "schema": {"type": "string"}},
    "X-K2-Snapshots": {"description": "table=snapshot_id,...", "schema": {"type": "string"}},
    "X-K2-Complete": {"description": "true or false", "schema": {"type": "string"}},
    "X-K2-Truncated": {"description": "true or false", "schema": {"type": "string"}},
    "X-K2-Next-Cursor": {
        "description": "Continue with ?cursor= (when truncated).",
        "schema": {"type": "string"},
    },
}


def _error(description: str, error: str, detail: Any) -> dict[str, Any]:
    return {
        "model": ErrorBody,
        "description": description,
        "content": {"application/json": {"example": {"error": error, "detail": detail}}},
    }


ERRORS: dict[int | str, dict[str, Any]] = {
    400: _error(
        "The query was refused before running (QueryRejected.reason in error).",
        "bad_parameter",
        "end must be after start",
    ),
    401: _error("Missing or invalid X-API-Key.", "unauthorized", "a valid X-API-Key header is required"),
    406: _error("The Accept header admits none of the formats.", "not_acceptable", "Accept: image/png"),
    408: _error("The query ran past its time limit.", "query_timeout", "query interrupted after 10 s"),
    413: _error("The request body is over max_body_bytes.", "body_too_large", "body is over the limit"),
    422: _error(
        "A parameter failed validation.",
        "invalid_request",
        [{"loc": ["query", "limit"], "msg": "Input should be greater than or equal to 1"}],
    ),
    429: {
        **_error("Over the caller's rate limit.", "rate_limited", "over 50 requests/s; retry in 0.02 s"),
        "headers": {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "string"}}},
    },
    500: _error("Unexpected server error (logged; no details given).", "internal", "unexpected server error"),
}


def data_responses(example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of a route answering rows in one of the four formats."""
    ok = {
        "model": RowsBody,
        "description": "Rows and their coverage, in the format asked for (?format= or Accept).",
        "headers": _COVERAGE_HEADERS,
        "content": {
            "application/json": {"example": example},
            "text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE},
            "application/vnd.apache.arrow.stream": _BINARY,
            "application/vnd.apache.parquet": _BINARY,
        },
    }
    return {200: ok, **ERRORS}


def status_responses(example: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses of a JSON-only route."""
    errors = {code: body for code, body in ERRORS.items() if code != 406}
    return {200: {"description": "OK", "content": {"application/json": {"example": example}}}, **errors}
