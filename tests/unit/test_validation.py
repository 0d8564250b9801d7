"""decode_batch: every message becomes exactly one row or one Reject, and good neighbours still land.

Each bad-input kind is put between two good messages, so a test pins both the Reject (index,
stage, rule) and that the batch's good messages come out as rows carrying their own Kafka
partition and offset. Property tests then mix good and bad messages freely.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import msgspec
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k2.validation import DecodedBatch, ValidationRules, decode_batch, output_schema
from k2.wire import Stream

NOW_US = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z
TOLERANCE_US = 300_000_000
MAX_BYTES = 16_384
RULES = ValidationRules(
    known_exchanges=frozenset({"ASX", "SIM"}),
    supported_schema_versions=frozenset({1}),
    max_message_bytes=MAX_BYTES,
    future_tolerance_us=TOLERANCE_US,
)
PARTITION = 3
FIRST_OFFSET = 100


def trade(**fields: Any) -> dict[str, Any]:
    msg: dict[str, Any] = dict(
        schema_version=1,
        exchange="ASX",
        symbol="BHP",
        session=20231114,
        seq=1,
        ts=NOW_US - 1_000,
        price=38.25,
        qty=100,
        conditions=["XT"],
        trade_id="T1",
        venue="ASX",
    )
    msg.update(fields)
    return msg


def quote(**fields: Any) -> dict[str, Any]:
    msg: dict[str, Any] = dict(
        schema_version=1,
        exchange="ASX",
        symbol="BHP",
        session=20231114,
        seq=1,
        ts=NOW_US - 1_000,
        bid=38.24,
        ask=38.26,
        bid_size=500,
        ask_size=300,
    )
    msg.update(fields)
    return msg


def reference(**fields: Any) -> dict[str, Any]:
    msg: dict[str, Any] = dict(
        schema_version=1, exchange="ASX", symbol="BHP", session=20231114, seq=1, ts=NOW_US - 1_000
    )
    msg.update(fields)
    return msg


def enc(msg: dict[str, Any]) -> bytes:
    return msgspec.json.encode(msg)


def without(msg: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in msg.items() if k != name}


def with_token(msg: dict[str, Any], field_name: str, token: bytes) -> bytes:
    """The message with ``field_name`` set to a raw JSON token msgspec would never encode."""
    marker = "__TOKEN__"
    return enc({**msg, field_name: marker}).replace(f'"{marker}"'.encode(), token)


def decode(stream: Stream, payloads: list[bytes], now_us: int = NOW_US) -> DecodedBatch:
    n = len(payloads)
    return decode_batch(
        stream, payloads, [PARTITION] * n, list(range(FIRST_OFFSET, FIRST_OFFSET + n)), RULES, now_us
    )


def good(stream: Stream, seq: int = 1) -> bytes:
    make = {"trades": trade, "quotes": quote, "reference": lambda **kw: reference(kind="listing", **kw)}
    return enc(make[stream](seq=seq))


# ---------------------------------------------------------------------------- one kind of bad input each

# A raw newline as JSON whitespace: valid JSON, but the wire format is one message per line.
_NEWLINE_MSG = enc(trade()).replace(b',"price"', b',\n"price"')

BAD: list[Any] = [
    pytest.param("trades", b'{"schema_version":1,"exch', "decode", "malformed", id="malformed-bytes"),
    pytest.param("trades", b"", "decode", "malformed", id="empty-message"),
    pytest.param(
        "trades",
        _NEWLINE_MSG,
        "decode",
        "malformed",
        id="raw-newline",
    ),
    pytest.param("trades", b"[1, 2, 3]", "decode", "wrong_type_or_missing_field", id="json-array"),
    pytest.param("trades", enc(without(trade(), "price")), "validate", "missing_field:price", id="absent"),
    pytest.param("trades", enc(trade(price=None)), "validate", "missing_field:price", id="explicit-null"),
    pytest.param(
        "trades", enc(without(trade(), "trade_id")), "validate", "missing_field:trade_id", id="no-id"
    ),
    pytest.param(
        "trades", enc(trade(price="38.25")), "decode", "wrong_type_or_missing_field", id="price-str"
    ),
    pytest.param("trades", enc(trade(seq=2.5)), "decode", "wrong_type_or_missing_field", id="seq-float"),
    pytest.param(
        "trades", enc(trade(seq=2.0)), "decode", "wrong_type_or_missing_field", id="seq-float-whole"
    ),
    pytest.param("trades", enc(trade(qty=True)), "decode", "wrong_type_or_missing_field", id="qty-bool"),
    pytest.param("trades", with_token(trade(), "price", b"NaN"), "validate", "price_not_finite", id="NaN"),
    pytest.param(
        "trades", with_token(trade(), "price", b"Infinity"), "validate", "price_not_finite", id="Inf"
    ),
    pytest.param(
        "trades", with_token(trade(), "price", b"-Infinity"), "validate", "price_not_finite", id="-Inf"
    ),
    # 1e999 overflows a double; it is caught while decoding ("Number out of range"), never stored as inf.
    pytest.param(
        "trades", with_token(trade(), "price", b"1e999"), "decode", "wrong_type_or_missing_field", id="1e999"
    ),
    pytest.param("trades", enc(trade(price=0.0)), "validate", "price_not_positive", id="price-zero"),
    pytest.param("trades", enc(trade(price=-1.5)), "validate", "price_not_positive", id="price-negative"),
    pytest.param("trades", enc(trade(qty=0)), "validate", "qty_not_positive", id="qty-zero"),
    pytest.param("trades", enc(trade(qty=-100)), "validate", "qty_not_positive", id="qty-negative"),
    pytest.param("quotes", enc(quote(bid=0.0)), "validate", "bid_not_positive", id="bid-zero"),
    pytest.param("quotes", enc(quote(ask=-38.0)), "validate", "ask_not_positive", id="ask-negative"),
    pytest.param("quotes", with_token(quote(), "bid", b"NaN"), "validate", "bid_not_finite", id="bid-NaN"),
    pytest.param(
        "quotes", with_token(quote(), "ask", b"Infinity"), "validate", "ask_not_finite", id="ask-Inf"
    ),
    pytest.param("quotes", enc(quote(bid_size=-1)), "validate", "size_negative", id="bid-size-negative"),
    pytest.param("quotes", enc(quote(ask_size=-5)), "validate", "size_negative", id="ask-size-negative"),
    pytest.param(
        "trades", enc(trade(ts=NOW_US + TOLERANCE_US + 1)), "validate", "ts_in_future", id="ts-too-far-ahead"
    ),
    pytest.param(
        "trades", enc(trade(exchange="NYSE")), "validate", "unknown_exchange", id="unknown-exchange"
    ),
    pytest.param(
        "trades",
        enc(trade(schema_version=2)),
        "validate",
        "unsupported_schema_version",
        id="schema-version-2",
    ),
    pytest.param("trades", enc(trade(seq=0)), "validate", "seq_not_positive", id="seq-zero"),
    pytest.param("trades", enc(trade(seq=-7)), "validate", "seq_not_positive", id="seq-negative"),
    pytest.param("trades", enc(trade(venue="X" * MAX_BYTES)), "decode", "oversize", id="oversize"),
]


@pytest.mark.parametrize(("stream", "bad", "stage", "rule"), BAD)
def test_bad_message_is_rejected_and_its_neighbours_land(
    stream: Stream, bad: bytes, stage: str, rule: str
) -> None:
    batch = decode(stream, [good(stream, 1), bad, good(stream, 2)])

    assert [(r.index, r.stage, r.rule) for r in batch.rejects] == [(1, stage, rule)]
    assert batch.rows["kafka_offset"].to_pylist() == [FIRST_OFFSET, FIRST_OFFSET + 2]
    assert batch.rows["kafka_partition"].to_pylist() == [PARTITION, PARTITION]
    assert batch.rows["seq"].to_pylist() == [1, 2]


def test_raw_newline_is_rejected_when_a_bad_neighbour_forces_message_by_message_decode() -> None:
    batch = decode("trades", [good("trades"), _NEWLINE_MSG, b"{"])

    assert [(r.index, r.stage, r.rule) for r in batch.rejects] == [
        (1, "decode", "malformed"),
        (2, "decode", "malformed"),
    ]
    assert batch.rows["kafka_offset"].to_pylist() == [FIRST_OFFSET]


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(enc(without(trade(), "price")), id="absent"),
        pytest.param(enc(trade(price=None)), id="null"),
        pytest.param(with_token(trade(), "price", b"NaN"), id="NaN"),
        pytest.param(with_token(trade(), "price", b"Infinity"), id="Infinity"),
    ],
)
def test_reject_rule_does_not_depend_on_the_neighbours(bad: bytes) -> None:
    clean = decode("trades", [good("trades"), bad]).rejects
    mixed = decode("trades", [good("trades"), bad, b"{"]).rejects

    assert (clean[0].stage, clean[0].rule) == (mixed[0].stage, mixed[0].rule)


@pytest.mark.parametrize("margin_us", [0, -1])
def test_ts_just_inside_future_tolerance_is_accepted(margin_us: int) -> None:
    ts = NOW_US + TOLERANCE_US + margin_us
    batch = decode("trades", [enc(trade(ts=ts))])

    assert batch.rejects == []
    assert batch.rows["ts"].cast(pa.int64()).to_pylist() == [ts]


def test_oversize_is_judged_on_bytes_and_a_message_of_exactly_the_limit_lands() -> None:
    base = enc(trade(venue=""))
    exact = enc(trade(venue="V" * (MAX_BYTES - len(base))))
    assert len(exact) == MAX_BYTES

    batch = decode("trades", [exact, enc(trade(venue="V" * (MAX_BYTES - len(base) + 1)))])

    assert [(r.index, r.rule) for r in batch.rejects] == [(1, "oversize")]
    assert batch.rows["kafka_offset"].to_pylist() == [FIRST_OFFSET]


def test_unknown_fields_on_the_wire_are_ignored() -> None:
    batch = decode("trades", [enc(trade(flag="new-in-v1.1"))])

    assert batch.rejects == []
    assert batch.rows.num_rows == 1
    assert "flag" not in batch.rows.column_names


# ---------------------------------------------------------------------------- valid but unusual data


def test_quote_with_no_bid_or_no_ask_on_the_book_is_valid() -> None:
    msgs = [enc(quote(seq=1, bid=None)), enc(quote(seq=2, ask=None)), enc(quote(seq=3, bid=None, ask=None))]

    batch = decode("quotes", msgs)

    assert batch.rejects == []
    assert batch.rows["bid"].to_pylist() == [None, 38.24, None]
    assert batch.rows["ask"].to_pylist() == [38.26, None, None]


def test_crossed_quote_is_valid_because_real_asx_data_has_them() -> None:
    batch = decode("quotes", [enc(quote(bid=38.30, ask=38.20))])

    assert batch.rejects == []
    assert batch.rows.select(["bid", "ask"]).to_pylist() == [{"bid": 38.30, "ask": 38.20}]


def test_zero_sizes_are_valid() -> None:
    batch = decode("quotes", [enc(quote(bid=None, bid_size=0, ask_size=0))])

    assert batch.rejects == []
    assert batch.rows["bid_size"].to_pylist() == [0]


def test_reference_listing_and_dividend_decode_into_rows() -> None:
    listing = reference(
        seq=1,
        kind="listing",
        name="BHP BILLITON LIMITED",
        isin="AU000000BHP4",
        currency="AUD",
        listed_from="1885-08-13",
    )
    dividend = reference(
        seq=2,
        kind="dividend",
        currency="AUD",
        amount=0.59,
        gross_amount=0.84,
        declared_date="2014-02-18",
        ex_date="2014-03-10",
        record_date="2014-03-14",
        pay_date="2014-03-27",
    )

    batch = decode("reference", [enc(listing), enc(dividend)])

    assert batch.rejects == []
    rows = batch.rows.to_pylist()
    assert [r["kind"] for r in rows] == ["listing", "dividend"]
    assert (rows[0]["isin"], rows[0]["listed_from"], rows[0]["amount"]) == (
        "AU000000BHP4",
        "1885-08-13",
        None,
    )
    assert (rows[1]["amount"], rows[1]["gross_amount"], rows[1]["ex_date"]) == (0.59, 0.84, "2014-03-10")
    assert batch.rows["kafka_offset"].to_pylist() == [FIRST_OFFSET, FIRST_OFFSET + 1]


def test_reference_with_unknown_kind_is_rejected() -> None:
    batch = decode("reference", [enc(reference(kind="listing")), enc(reference(seq=2, kind="spinoff"))])

    assert [(r.index, r.stage, r.rule) for r in batch.rejects] == [(1, "validate", "unknown_reference_kind")]
    assert batch.rows["kind"].to_pylist() == ["listing"]


def test_reference_with_unknown_kind_gets_the_same_reason_when_decoded_message_by_message() -> None:
    batch = decode("reference", [enc(reference(kind="listing")), enc(reference(seq=2, kind="spinoff")), b"{"])

    assert [(r.index, r.stage, r.rule) for r in batch.rejects] == [
        (1, "validate", "unknown_reference_kind"),
        (2, "decode", "malformed"),
    ]
    assert batch.rows["kind"].to_pylist() == ["listing"]


# ---------------------------------------------------------------------------- poison must not kill ingest


def test_json_null_message_after_the_first_is_rejected() -> None:
    batch = decode("trades", [good("trades"), b"null"])

    assert [(r.index, r.stage, r.rule) for r in batch.rejects] == [
        (1, "decode", "wrong_type_or_missing_field")
    ]
    assert batch.rows["kafka_offset"].to_pylist() == [FIRST_OFFSET]


def test_json_null_message_first_in_batch_is_rejected_without_killing_the_process() -> None:
    script = (
        "from k2.validation import ValidationRules, decode_batch\n"
        f"rules = ValidationRules(frozenset({{'ASX'}}), frozenset({{1}}), {MAX_BYTES}, {TOLERANCE_US})\n"
        f"b = decode_batch('trades', [b'null', {good('trades')!r}], [0, 0], [0, 1], rules, {NOW_US})\n"
        "print([r.index for r in b.rejects], b.rows['kafka_offset'].to_pylist())\n"
    )

    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert proc.returncode == 0, f"decode_batch killed the process: exit {proc.returncode}"
    assert proc.stdout.strip() == "[0] [1]"


# ---------------------------------------------------------------------------- clean batches


@pytest.mark.parametrize("stream", ["trades", "quotes", "reference"])
def test_all_good_batch_has_no_rejects_and_the_output_schema(stream: Stream) -> None:
    batch = decode(stream, [good(stream, seq) for seq in range(1, 6)])

    assert batch.rejects == []
    assert batch.rows.num_rows == 5
    loose = pa.schema([f.with_nullable(True) for f in output_schema(stream)])
    assert pa.schema([f.with_nullable(True) for f in batch.rows.schema]) == loose
    # The lake appends with the strict schema: a validated batch must fit it.
    assert batch.rows.cast(output_schema(stream)).num_rows == 5


def test_ts_becomes_a_utc_timestamp_with_the_same_microseconds_and_ingest_ts_is_now() -> None:
    stamps = [1_394_406_000_123_456, 1_394_406_000_123_457, NOW_US]
    ingest_now = NOW_US + 42

    batch = decode("trades", [enc(trade(seq=i + 1, ts=ts)) for i, ts in enumerate(stamps)], now_us=ingest_now)

    assert batch.rows.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert batch.rows["ts"].cast(pa.int64()).to_pylist() == stamps
    assert batch.rows.schema.field("ingest_ts").type == pa.timestamp("us", tz="UTC")
    assert batch.rows["ingest_ts"].cast(pa.int64()).to_pylist() == [ingest_now] * 3


def test_rows_carry_each_messages_own_partition_and_offset() -> None:
    payloads = [good("trades", seq) for seq in (1, 2, 3)]

    batch = decode_batch("trades", payloads, [5, 0, 5], [7, 1_000_000_000_000, 8], RULES, NOW_US)

    assert batch.rows.select(["seq", "kafka_partition", "kafka_offset"]).to_pylist() == [
        {"seq": 1, "kafka_partition": 5, "kafka_offset": 7},
        {"seq": 2, "kafka_partition": 0, "kafka_offset": 1_000_000_000_000},
        {"seq": 3, "kafka_partition": 5, "kafka_offset": 8},
    ]


def test_empty_batch_gives_no_rows_and_no_rejects() -> None:
    batch = decode("trades", [])

    assert batch.rows.num_rows == 0 and batch.rejects == []


# ---------------------------------------------------------------------------- properties

_BAD_POOL: dict[Stream, list[bytes]] = {
    "trades": [p.values[1] for p in BAD if p.values[0] == "trades"],
    "quotes": [p.values[1] for p in BAD if p.values[0] == "quotes"] + [b"", b"{", b"true", b"[]"],
}


def _good_message(stream: Stream) -> st.SearchStrategy[bytes]:
    if stream == "trades":
        return st.builds(
            lambda seq, price, qty: enc(trade(seq=seq, price=price, qty=qty)),
            st.integers(1, 10**12),
            st.floats(min_value=1e-6, max_value=1e9),
            st.integers(1, 10**9),
        )
    return st.builds(
        lambda seq, bid, ask: enc(quote(seq=seq, bid=bid, ask=ask)),
        st.integers(1, 10**12),
        st.none() | st.floats(min_value=1e-6, max_value=1e9),
        st.none() | st.floats(min_value=1e-6, max_value=1e9),
    )


@st.composite
def _mixed_batch(draw: st.DrawFn) -> tuple[Stream, list[bytes], list[bool]]:
    """A stream, its payloads, and for each whether it is a good message."""
    stream: Stream = draw(st.sampled_from(["trades", "quotes"]))
    items = draw(
        st.lists(
            st.one_of(
                _good_message(stream).map(lambda b: (b, True)),
                st.sampled_from(_BAD_POOL[stream]).map(lambda b: (b, False)),
            ),
            max_size=30,
        )
    )
    return stream, [b for b, _ in items], [ok for _, ok in items]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=_mixed_batch(), first_offset=st.integers(0, 10**15))
def test_every_message_is_exactly_one_row_or_one_reject(
    batch: tuple[Stream, list[bytes], list[bool]], first_offset: int
) -> None:
    stream, payloads, is_good = batch
    n = len(payloads)
    offsets = [first_offset + 3 * i for i in range(n)]  # sparse, as after compaction or transactions

    out = decode_batch(stream, payloads, [1] * n, offsets, RULES, NOW_US)

    landed = [offsets.index(o) for o in out.rows["kafka_offset"].to_pylist()]
    rejected = [r.index for r in out.rejects]
    assert rejected == sorted(rejected)
    assert sorted(landed + rejected) == list(range(n))
    # Every good message lands and no bad one does, whatever the batch around it holds.
    assert set(landed) == {i for i in range(n) if is_good[i]}
    assert out.rows["kafka_partition"].to_pylist() == [1] * len(landed)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=_mixed_batch())
def test_whether_a_message_lands_does_not_depend_on_its_batch(
    batch: tuple[Stream, list[bytes], list[bool]],
) -> None:
    stream, payloads, _ = batch

    together = decode(stream, payloads)
    alone = [decode(stream, [p]).rows.num_rows == 1 for p in payloads]

    landed = {o - FIRST_OFFSET for o in together.rows["kafka_offset"].to_pylist()}
    assert [i in landed for i in range(len(payloads))] == alone


# ---------------------------------------------------------------------------- the unforeseen


def test_an_unforeseen_error_on_one_message_refuses_only_it_as_internal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import k2.validation as validation

    real = validation._decode_batch
    poison = enc(trade(seq=2, trade_id="boom"))

    def flaky(stream: Stream, payloads: list[bytes], *args: Any) -> DecodedBatch:
        if poison in payloads:
            raise MemoryError("simulated failure inside decoding")
        return real(stream, payloads, *args)

    monkeypatch.setattr(validation, "_decode_batch", flaky)
    batch = decode("trades", [enc(trade(seq=1)), poison, enc(trade(seq=3, price=-1.0))])

    assert [(r.index, r.stage, r.rule, r.exception) for r in batch.rejects] == [
        (1, "decode", "internal", "MemoryError"),
        (2, "validate", "price_not_positive", "ValidationError"),
    ]
    assert batch.rows["seq"].to_pylist() == [1]
    assert batch.rows["kafka_offset"].to_pylist() == [FIRST_OFFSET]
