"""A corpus of bad (and tricky but valid) wire messages, each with the verdict k2 must give it.

Shared by the unit tests (decode_batch alone and in mixed batches) and the integration test (real
broker, real Iceberg, each message produced twice). ``docs/wire-format.md`` has the same table for
users; ``test_docs_table_matches_the_corpus`` keeps the two in step.

Every case is built by :func:`cases` for a ``round``: the seq differs per round, so a case that
must land is a new identity each time it is produced.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from k2.wire import Stream

LANDS = "lands"
NOW_US = 1_700_000_000_000_000  # tests using the corpus decode with this clock, or a later one


@dataclass(frozen=True)
class Case:
    kind: str
    stream: Stream
    value: bytes | None
    verdict: str  # LANDS or the DLQ reason (k2.reason)
    headers: tuple[tuple[str, bytes | None], ...] = ()
    note: str = ""

    @property
    def key(self) -> bytes:
        return self.kind.encode()


def _trade(seq: int, symbol: str, **over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "schema_version": 1,
        "exchange": "SIM",
        "symbol": symbol,
        "session": 20231114,
        "seq": seq,
        "ts": NOW_US - 60_000_000,
        "price": 38.25,
        "qty": 100,
        "conditions": ["XT"],
        "trade_id": f"T{seq}",
        "venue": "X",
    }
    msg.update(over)
    return msg


def _quote(seq: int, symbol: str, **over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "schema_version": 1,
        "exchange": "SIM",
        "symbol": symbol,
        "session": 20231114,
        "seq": seq,
        "ts": NOW_US - 60_000_000,
        "bid": 38.24,
        "ask": 38.26,
        "bid_size": 500,
        "ask_size": 300,
    }
    msg.update(over)
    return msg


def _ref(seq: int, symbol: str, **over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "schema_version": 1,
        "exchange": "SIM",
        "symbol": symbol,
        "session": 20231114,
        "seq": seq,
        "ts": NOW_US - 60_000_000,
        "kind": "dividend",
        "amount": 0.59,
    }
    msg.update(over)
    return msg


def _j(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode()


def _without(msg: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in msg.items() if k != name}


def _splice(msg: dict[str, Any], text: bytes) -> bytes:
    """The message with ``text`` (raw bytes, e.g. an invalid token) appended as its last member."""
    return _j(msg)[:-1] + b"," + text + b"}"


def _replace(msg: dict[str, Any], field: str, raw_value: bytes) -> bytes:
    """The message with ``field``'s value written as the raw bytes ``raw_value``."""
    return _splice(_without(msg, field), b'"' + field.encode() + b'":' + raw_value)


Builder = Callable[[int, str], Case]


def cases(round_: int, broker_limit: int | None = None) -> list[Case]:
    """Every case for one round (seq = round, symbol = the kind's own), in a stable order.

    ``broker_limit``: also a record as large as the source topic accepts (integration only).
    """
    s = round_
    t = _trade
    out = [
        # -- framing: not one JSON object on one line
        Case("not_json", "trades", b"hello, world", "malformed"),
        Case("empty_value", "trades", b"", "malformed"),
        Case("tombstone", "trades", None, "malformed", note="null value, judged as empty"),
        Case("json_null", "trades", b"null", "wrong_type_or_missing_field"),
        Case("json_array", "trades", b"[1,2,3]", "wrong_type_or_missing_field"),
        Case("json_string", "trades", b'"BHP"', "wrong_type_or_missing_field"),
        Case("truncated_object", "trades", _j(t(s, "TRUNC"))[:40], "malformed"),
        Case("trailing_garbage", "trades", _j(t(s, "TRAIL")) + b" x", "malformed"),
        Case("two_objects_one_line", "trades", _j(t(s, "TWO")) * 2, "malformed"),
        Case("raw_newline_inside", "trades", _j(t(s, "NL")).replace(b',"qty"', b',\n"qty"'), "malformed"),
        Case("leading_bom", "trades", b"\xef\xbb\xbf" + _j(t(s, "BOM")), "malformed"),
        Case("utf16_encoded", "trades", _j(t(s, "U16")).decode().encode("utf-16"), "invalid_utf8"),
        Case("json_comment", "trades", _splice(t(s, "CMT"), b'/* c */ "x":1'), "malformed"),
        Case("single_quotes", "trades", _replace(t(s, "SQ"), "trade_id", b"'T1'"), "malformed"),
        Case("duplicate_key", "trades", _replace(t(s, "DUP"), "x", b'1,"price":-1'), "malformed"),
        # -- encodings and strings
        Case(
            "invalid_utf8_in_value",
            "trades",
            _replace(t(s, "IU8"), "trade_id", b'"\xff\xfe"'),
            "invalid_utf8",
        ),
        Case(
            "invalid_utf8_in_ignored_field", "trades", _replace(t(s, "IU8X"), "x", b'"\xc3"'), "invalid_utf8"
        ),
        Case("invalid_utf8_in_key", "trades", _splice(t(s, "IU8K"), b'"\xff":1'), "invalid_utf8"),
        Case("overlong_utf8", "trades", _replace(t(s, "OVL"), "venue", b'"\xc0\xaf"'), "invalid_utf8"),
        Case(
            "utf8_encoded_surrogate",
            "trades",
            _replace(t(s, "SUR"), "venue", b'"\xed\xa0\x80"'),
            "invalid_utf8",
        ),
        Case("lone_surrogate_escape", "trades", _replace(t(s, "LSE"), "trade_id", b'"\\ud800"'), "malformed"),
        Case(
            "raw_control_char_in_string",
            "trades",
            _replace(t(s, "CTL"), "trade_id", b'"a\x01b"'),
            "malformed",
        ),
        Case("escaped_nul_in_string", "trades", _j(t(s, "NUL", trade_id="a\x00b")), LANDS),
        Case("non_ascii_symbol", "trades", _j(t(s, "ÆØÅ😀")), LANDS, note="valid UTF-8 lands as is"),
        Case("long_trade_id", "trades", _j(t(s, "LONG", trade_id="x" * 12_000)), LANDS),
        # -- nesting
        Case(
            "deep_nesting_ignored_field",
            "trades",
            _replace(t(s, "DEEP"), "x", b"[" * 5000 + b"]" * 5000),
            LANDS,
            note="unknown fields are ignored whatever they hold",
        ),
        Case(
            "deep_nesting_known_field",
            "trades",
            _replace(t(s, "DEEPK"), "conditions", b"[" * 5000 + b"]" * 5000),
            "wrong_type_or_missing_field",
        ),
        Case(
            "nested_object_as_price", "trades", _j(t(s, "OBJ", price={"v": 1})), "wrong_type_or_missing_field"
        ),
        # -- numbers
        Case("nan_price", "trades", _replace(t(s, "NAN"), "price", b"NaN"), "price_not_finite"),
        Case("infinity_price", "trades", _replace(t(s, "INF"), "price", b"-Infinity"), "price_not_finite"),
        Case(
            "price_out_of_float_range",
            "trades",
            _replace(t(s, "E400"), "price", b"1e400"),
            "wrong_type_or_missing_field",
        ),
        Case("negative_price", "trades", _j(t(s, "NEG", price=-1.5)), "price_not_positive"),
        Case("zero_qty", "trades", _j(t(s, "ZQ", qty=0)), "qty_not_positive"),
        Case("fractional_qty", "trades", _j(t(s, "FQ", qty=10.5)), "wrong_type_or_missing_field"),
        Case("qty_as_string", "trades", _j(t(s, "SQTY", qty="100")), "wrong_type_or_missing_field"),
        Case(
            "seq_beyond_int64",
            "trades",
            _replace(t(s, "BIG"), "seq", str(2**64).encode()),
            "wrong_type_or_missing_field",
        ),
        Case("session_beyond_int32", "trades", _j(t(s, "S32", session=2**31)), "wrong_type_or_missing_field"),
        Case("zero_seq", "trades", _j(t(0, "ZSEQ")), "seq_not_positive"),
        Case(
            "huge_integer_price",
            "trades",
            _replace(t(s, "HUGE"), "price", b"1" + b"0" * 30),
            LANDS,
            note="an integer is a valid float",
        ),
        # -- fields and rules
        Case("missing_symbol", "trades", _j(_without(t(s, "MS"), "symbol")), "missing_field:symbol"),
        Case("null_trade_id", "trades", _j(t(s, "NTID", trade_id=None)), "missing_field:trade_id"),
        Case("empty_symbol", "trades", _j(t(s, "")), "empty_symbol"),
        Case("unknown_exchange", "trades", _j(t(s, "UEX", exchange="NYSE")), "unknown_exchange"),
        Case(
            "unsupported_schema_version",
            "trades",
            _j(t(s, "V2", schema_version=2)),
            "unsupported_schema_version",
        ),
        Case("ts_in_future", "trades", _j(t(s, "FUT", ts=4_102_444_800_000_000)), "ts_in_future"),
        Case("ts_negative", "trades", _j(t(s, "TSN", ts=-1)), "ts_not_positive"),
        Case(
            "conditions_not_a_list", "trades", _j(t(s, "CNL", conditions="XT")), "wrong_type_or_missing_field"
        ),
        Case(
            "bad_with_null_header",
            "trades",
            _j(t(s, "NH", price=-2.0)),
            "price_not_positive",
            headers=(("trace", None), ("source", b"feed-a")),
        ),
        Case("good_with_null_header", "trades", _j(t(s, "GNH")), LANDS, headers=(("trace", None),)),
        # -- size
        Case("oversize_20kib", "trades", _j(t(s, "O20", trade_id="x" * 20_000)), "oversize"),
        Case("oversize_5mib", "trades", _j(t(s, "O5M", trade_id="x" * (5 << 20))), "oversize"),
        # -- quotes
        Case(
            "quote_without_bid",
            "quotes",
            _j(_without(_quote(s, "QNB"), "bid")),
            LANDS,
            note="bid is optional: no bid on the book",
        ),
        Case("quote_negative_ask", "quotes", _j(_quote(s, "QNA", ask=-1.0)), "ask_not_positive"),
        Case("quote_negative_size", "quotes", _j(_quote(s, "QNS", bid_size=-5)), "size_negative"),
        Case(
            "quote_missing_bid_size",
            "quotes",
            _j(_without(_quote(s, "QMS"), "bid_size")),
            "missing_field:bid_size",
        ),
        Case("quote_nan_bid", "quotes", _replace(_quote(s, "QNAN"), "bid", b"NaN"), "bid_not_finite"),
        # -- reference data
        Case(
            "reference_unknown_kind",
            "reference",
            _j(_ref(s, "RUK", kind="spinoff")),
            "unknown_reference_kind",
        ),
        Case(
            "reference_kind_as_number", "reference", _j(_ref(s, "RKN", kind=3)), "wrong_type_or_missing_field"
        ),
        Case(
            "reference_nan_amount",
            "reference",
            _replace(_ref(s, "RNA"), "amount", b"NaN"),
            "amount_not_finite",
        ),
    ]
    if broker_limit is not None:
        # The value alone: the key and the record's framing take the rest of the broker's limit.
        size = broker_limit - 1024
        out.append(Case("at_broker_limit", "trades", b"{" + b" " * (size - 2) + b"}", "oversize"))
    return out


def filler(stream: Stream, seq: int) -> bytes:
    """A valid message of the ``GOOD`` symbol, the neighbours the corpus is mixed between."""
    build = {"trades": _trade, "quotes": _quote, "reference": _ref}[stream]
    return _j(build(seq, "GOOD"))
