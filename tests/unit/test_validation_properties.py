"""Property tests of decode_batch over input nobody wrote by hand.

Two generators: arbitrary bytes, and structured mutations of valid messages (nesting depth,
encodings, control characters, huge and tiny numbers, missing, extra and duplicate fields, invalid
UTF-8 spliced in). For every input: decode never raises, every message is exactly one row or one
Reject, every stored string is valid UTF-8, and a message gets the same verdict, reason and row
whether it is alone in its batch (the columnar path), among good neighbours, or next to a bad
neighbour that sends the batch down the message-by-message fallback.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k2.validation import DecodedBatch, ValidationRules, decode_batch
from k2.wire import STREAMS, Stream

NOW_US = 1_700_000_000_000_000
RULES = ValidationRules(
    known_exchanges=frozenset({"ASX", "SIM"}),
    supported_schema_versions=frozenset({1}),
    max_message_bytes=16_384,
    future_tolerance_us=300_000_000,
)
_LINEAGE = ("ingest_ts", "kafka_partition", "kafka_offset")
_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

_VALID: dict[Stream, dict[str, Any]] = {
    "trades": {
        "schema_version": 1,
        "exchange": "ASX",
        "symbol": "BHP",
        "session": 20231114,
        "seq": 7,
        "ts": NOW_US - 5_000,
        "price": 38.25,
        "qty": 100,
        "conditions": ["XT"],
        "trade_id": "T7",
        "venue": "X",
    },
    "quotes": {
        "schema_version": 1,
        "exchange": "ASX",
        "symbol": "BHP",
        "session": 20231114,
        "seq": 7,
        "ts": NOW_US - 5_000,
        "bid": 38.24,
        "ask": 38.26,
        "bid_size": 500,
        "ask_size": 300,
    },
    "reference": {
        "schema_version": 1,
        "exchange": "ASX",
        "symbol": "BHP",
        "session": 20231114,
        "seq": 7,
        "ts": NOW_US - 5_000,
        "kind": "dividend",
        "amount": 0.59,
        "ex_date": "2014-03-10",
    },
}


def _decode(stream: Stream, payloads: list[bytes]) -> DecodedBatch:
    n = len(payloads)
    return decode_batch(stream, payloads, [0] * n, list(range(n)), RULES, NOW_US)


def _verdict(batch: DecodedBatch, index: int) -> tuple[str, ...] | dict[str, Any]:
    """A message's verdict in a batch: (stage, rule) if refused, else its row without lineage."""
    for r in batch.rejects:
        if r.index == index:
            return (r.stage, r.rule)
    offsets = batch.rows["kafka_offset"].to_pylist()
    row = batch.rows.slice(offsets.index(index), 1).to_pylist()[0]
    return {k: v for k, v in row.items() if k not in _LINEAGE}


def _good(stream: Stream, seq: int) -> bytes:
    return json.dumps({**_VALID[stream], "seq": seq}).encode()


def _assert_accounted(batch: DecodedBatch, n: int) -> None:
    rejected = [r.index for r in batch.rejects]
    landed = batch.rows["kafka_offset"].to_pylist()
    assert len(rejected) == len(set(rejected))
    assert sorted(rejected + landed) == list(range(n)), "a message was lost or counted twice"
    batch.rows.validate(full=True)  # includes: every string column is valid UTF-8


def _assert_same_verdict_in_any_batch(stream: Stream, raw: bytes) -> None:
    alone = _decode(stream, [raw])
    _assert_accounted(alone, 1)
    among_good = _decode(stream, [_good(stream, 1), raw, _good(stream, 2)])
    _assert_accounted(among_good, 3)
    # "{" is malformed: the whole batch is then judged message by message.
    beside_bad = _decode(stream, [_good(stream, 1), raw, b"{", _good(stream, 2)])
    _assert_accounted(beside_bad, 4)
    expected = _verdict(alone, 0)
    assert _verdict(among_good, 1) == expected
    assert _verdict(beside_bad, 1) == expected
    assert _verdict(beside_bad, 2) == ("decode", "malformed")


# -- arbitrary bytes ----------------------------------------------------------------------------


@_SETTINGS
@given(stream=st.sampled_from(STREAMS), payloads=st.lists(st.binary(max_size=200), max_size=6))
def test_arbitrary_bytes_never_raise_and_every_message_is_accounted_for(
    stream: Stream, payloads: list[bytes]
) -> None:
    batch = _decode(stream, payloads)
    _assert_accounted(batch, len(payloads))


@_SETTINGS
@given(stream=st.sampled_from(STREAMS), raw=st.binary(max_size=200))
def test_arbitrary_bytes_get_the_same_verdict_in_any_batch(stream: Stream, raw: bytes) -> None:
    _assert_same_verdict_in_any_batch(stream, raw)


# -- structured mutations of valid messages -----------------------------------------------------

_INTS = st.one_of(
    st.integers(-10, 10),
    st.integers(-(2**70), 2**70),
    st.sampled_from(
        [2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64]
    ),
)
_FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [5e-324, 1.7976931348623157e308, -0.0]
)
_TEXT = st.text(st.characters(codec="utf-8"), max_size=20) | st.sampled_from(
    ["", "\x00", "a\nb", "\u2028", "é", "😀", "x" * 40]
)
_JSON = st.recursive(
    st.none() | st.booleans() | _INTS | _FLOATS | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
# Number and string forms json.dumps never writes but other producers do.
_RAW_TOKENS = st.sampled_from(
    [
        b"1e400",
        b"-1e400",
        b"1E2",
        b"10.0",
        b"-0",
        b"0.0000000000000000000000001",
        b"123456789012345678901234567890",
        b"NaN",
        b"-Infinity",
        b"true",
        b'"\\ud800"',
        b'"\\udc00\\ud800"',
        b'"\\ud83d\\ude00"',
        b'"\\u0000"',
        b'"a\tb"',
        b'"a\x00b"',
        b'"\xff\xfe"',
        b'"\xc3"',
        b'"\xed\xa0\x80"',
        b"'single'",
        b"[1,]",
        b"{}",
        b"[]",
        b"[null]",
        b'["a",null]',
    ]
)


@st.composite
def _mutated(draw: st.DrawFn) -> tuple[Stream, bytes]:
    stream: Stream = draw(st.sampled_from(STREAMS))
    msg = dict(_VALID[stream])
    names = sorted(msg)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["set", "delete", "extra"]))
        name = draw(st.sampled_from(names))
        if kind == "set":
            msg[name] = draw(_JSON)
        elif kind == "delete":
            msg.pop(name, None)
        else:
            msg[draw(_TEXT)] = draw(_JSON)
    raw = json.dumps(msg, ensure_ascii=draw(st.booleans())).encode()
    body = raw[1:-1]
    splice = draw(
        st.sampled_from(["none", "raw_token", "duplicate", "deep", "deep_known", "bytes", "encoding", "wrap"])
    )
    if splice == "raw_token":
        field = draw(st.sampled_from(names)).encode()
        raw = b"{" + body + b',"' + field + b'":' + draw(_RAW_TOKENS) + b"}"
    elif splice == "duplicate":
        field = draw(st.sampled_from(names))
        raw = b"{" + body + b"," + json.dumps({field: draw(_JSON)}).encode()[1:-1] + b"}"
    elif splice == "deep":  # nesting in a field the schema ignores: msgspec's limit is ~1,000
        depth = draw(st.integers(1, 6000))
        raw = b"{" + body + b',"x":' + b"[" * depth + b"]" * depth + b"}"
    elif splice == "deep_known":
        depth = draw(st.integers(1, 3000))
        field = draw(st.sampled_from(names)).encode()
        raw = b"{" + body + b',"' + field + b'":' + b"[" * depth + b"]" * depth + b"}"
    elif splice == "bytes":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.binary(min_size=1, max_size=4)) + raw[at:]
    elif splice == "encoding":
        codec = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "utf-8-sig"]))
        raw = raw.decode("utf-8").encode(codec, errors="replace")
    elif splice == "wrap":
        raw = draw(st.sampled_from([b" ", b"\r", b"\t", b"\xef\xbb\xbf", b""])) + raw
        raw += draw(st.sampled_from([b" ", b"\r", b"\r\n", b"\n", b"\x00", b"", b" x"]))
    return stream, raw


@_SETTINGS
@given(case=_mutated())
def test_mutated_messages_get_the_same_verdict_in_any_batch(case: tuple[Stream, bytes]) -> None:
    stream, raw = case
    _assert_same_verdict_in_any_batch(stream, raw)


@_SETTINGS
@given(stream=st.sampled_from(STREAMS), cases=st.lists(_mutated(), min_size=1, max_size=8))
def test_mutated_batches_land_each_message_as_it_would_land_alone(
    stream: Stream, cases: list[tuple[Stream, bytes]]
) -> None:
    payloads = [raw for _, raw in cases]
    batch = _decode(stream, payloads)
    _assert_accounted(batch, len(payloads))
    for i, raw in enumerate(payloads):
        assert _verdict(batch, i) == _verdict(_decode(stream, [raw]), 0)


def test_stored_strings_are_valid_utf8_when_escapes_encode_surrogate_pairs() -> None:
    raw = json.dumps({**_VALID["trades"], "trade_id": "😀"}, ensure_ascii=True).encode()
    batch = _decode("trades", [raw])
    assert batch.rows["trade_id"].to_pylist() == ["😀"]
    assert isinstance(batch.rows, pa.Table)
