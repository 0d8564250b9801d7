"""Decode and validate a batch of wire messages into one Arrow table, columnar.

The hot path parses the whole batch at once with ``pyarrow.json`` against the wire schema and
checks every rule as a vectorised Arrow expression, so a clean batch costs a handful of C calls
rather than a Python loop per message. Only a batch that fails to parse as a whole falls back to
decoding message by message with msgspec, to find exactly which messages are bad and why; the good
ones then go back through the columnar path.

Invariants, for any bytes at all (property-tested over arbitrary and mutated input):
- every input message ends up either as exactly one output row (carrying its Kafka partition and
  offset) or as exactly one ``Reject`` (carrying its index, the stage and the rule); nothing is
  dropped silently and :func:`decode_batch` never raises (an unexpected error becomes a Reject
  with rule ``internal`` and the exception class);
- a message gets the same verdict and reason whatever its neighbours: the columnar parse accepts
  a message exactly when the fallback does (``k2.wire.lenient_struct`` mirrors what Arrow's reader
  accepts, and where msgspec cannot judge, e.g. NaN tokens or nesting deeper than its recursion
  limit, Arrow alone decides);
- every string in an output row is valid UTF-8: a message that is not valid UTF-8 anywhere is
  rejected as ``invalid_utf8`` (Arrow's JSON reader does not check, and invalid strings would
  otherwise reach Parquet).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from k2.logs import get_logger
from k2.wire import REFERENCE_KINDS, REQUIRED, Stream, arrow_wire_schema, lenient_struct

__all__ = ["DecodedBatch", "Reject", "ValidationRules", "decode_batch", "output_schema"]

_log = get_logger("validation")

TS_TYPE = pa.timestamp("us", tz="UTC")
_LINEAGE = [
    pa.field("ingest_ts", TS_TYPE, nullable=False),
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
]


@dataclass(frozen=True, slots=True)
class ValidationRules:
    known_exchanges: frozenset[str]
    supported_schema_versions: frozenset[int]
    max_message_bytes: int
    future_tolerance_us: int


@dataclass(frozen=True, slots=True)
class Reject:
    """One message that will not land: ``index`` into the input batch, and why."""

    index: int
    stage: str  # "decode" (not parseable as the wire type) or "validate" (parsed, broke a rule)
    rule: str
    detail: str
    exception: str  # class name of the error that caught it


@dataclass(slots=True)
class DecodedBatch:
    rows: pa.Table
    rejects: list[Reject] = field(default_factory=list)


def output_schema(stream: Stream) -> pa.Schema:
    """Schema of decoded rows: the wire fields (``ts`` as a UTC timestamp) plus ingest lineage."""
    required = set(REQUIRED[stream])
    fields = []
    for f in arrow_wire_schema(stream):
        typ = TS_TYPE if f.name == "ts" else f.type
        fields.append(pa.field(f.name, typ, nullable=f.name not in required))
    return pa.schema(fields + _LINEAGE)


_PARSE_CACHE: dict[Stream, pj.ParseOptions] = {}
# One thread: ingest already overlaps parsing with fetching (k2.ingest.fetcher) and with commits,
# and Arrow's own threads cost about 0.4 us of extra CPU per message (1.56 vs 1.12 us, measured),
# which a machine shared with the broker and the feed pays for in throughput. Blocks of 512 KiB
# stay in cache; a block must hold the largest message, which the size cap bounds (16 KiB).
_READ_OPTIONS = pj.ReadOptions(block_size=512 * 1024, use_threads=False)


def _parse_options(stream: Stream) -> pj.ParseOptions:
    opts = _PARSE_CACHE.get(stream)
    if opts is None:
        opts = pj.ParseOptions(explicit_schema=arrow_wire_schema(stream), unexpected_field_behavior="ignore")
        _PARSE_CACHE[stream] = opts
    return opts


def _lengths(payloads: list[bytes]) -> np.ndarray:
    return np.fromiter(map(len, payloads), np.int64, len(payloads))


def _parse_columnar(
    stream: Stream, payloads: list[bytes], lengths: np.ndarray | None = None
) -> pa.Table | None:
    """Parse all payloads as newline-delimited JSON; None if any message spoils the batch.

    Guards before Arrow sees the bytes: every message must open an object (a bare ``null`` first
    in the input crashes pyarrow 26's reader, apache/arrow#47409), and the joined buffer must hold
    exactly one newline per boundary (Arrow would accept an object spread over several lines).
    ``lengths`` (the payloads' sizes) saves a pass when the caller has them.
    """
    if not payloads:
        return arrow_wire_schema(stream).empty_table()
    if lengths is None:
        lengths = _lengths(payloads)
    if not lengths.min():  # an empty message
        return None
    joined = b"\n".join(payloads)
    # Vectorised, not a Python loop: with exactly n-1 newlines none is inside a message, and the
    # first byte of every message (found from the lengths) must open an object. Searching for
    # "\n{" instead cost twice as much as this whole check.
    starts = np.empty(len(payloads), np.int64)
    starts[0] = 0
    np.cumsum(lengths[:-1] + 1, out=starts[1:])
    if joined.count(b"\n") != len(payloads) - 1:
        return None
    if not (np.frombuffer(joined, np.uint8)[starts] == ord("{")).all():
        return None
    if not _valid_utf8(joined):
        return None
    try:
        table = pj.read_json(
            io.BytesIO(joined),
            read_options=_READ_OPTIONS,
            parse_options=_parse_options(stream),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    # A message holding a raw newline (or an empty one) shifts rows: the batch is not trustworthy.
    return table if table.num_rows == len(payloads) else None


def _valid_utf8(data: bytes) -> bool:
    # ASCII (nearly every market message) is checked at memory speed, about 0.015 us a message.
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _judge_one(stream: Stream, i: int, raw: bytes, decoder: msgspec.json.Decoder[Any]) -> Reject | None:
    """The verdict on one message alone: None if Arrow's columnar parse would accept it."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Reject(i, "decode", "invalid_utf8", f"{e.reason} at byte {e.start}", type(e).__name__)
    try:
        decoder.decode(raw)
    except msgspec.ValidationError as e:
        return Reject(i, "decode", "wrong_type_or_missing_field", str(e), type(e).__name__)
    except (msgspec.DecodeError, RecursionError) as e:
        # msgspec refuses NaN/Infinity tokens that Arrow reads as floats, and gives up on nesting
        # past its recursion limit (in an ignored field) that Arrow's iterative reader skips: there
        # Arrow alone decides, so the verdict (e.g. price_not_finite) is the same in any batch.
        if _parse_columnar(stream, [raw]) is not None:
            return None
        return Reject(i, "decode", "malformed", str(e), type(e).__name__)
    if b"\n" in raw or raw[:1] != b"{":
        return Reject(i, "decode", "malformed", "raw newline or not a bare object", "DecodeError")
    return None


def _decode_one_by_one(
    stream: Stream, payloads: list[bytes], index: Sequence[int], rejects: list[Reject]
) -> list[int]:
    """Judge each indexed message alone; returns the indices of those that decoded."""
    decoder = msgspec.json.Decoder(lenient_struct(stream))
    good: list[int] = []
    for i in index:
        try:
            verdict = _judge_one(stream, i, payloads[i], decoder)
        except Exception as e:  # a message must never stop ingest; see decode_batch
            verdict = _internal(i, e)
        if verdict is None:
            good.append(i)
        else:
            rejects.append(verdict)
    return good


def _internal(i: int, e: BaseException) -> Reject:
    _log.error("decode_internal_error", index=i, exception=type(e).__name__, error=str(e)[:500])
    return Reject(i, "decode", "internal", f"{type(e).__name__}: {e}"[:1000], type(e).__name__)


def _rule_masks(
    stream: Stream, t: pa.Table, rules: ValidationRules, now_us: int
) -> list[tuple[str, pa.Array]]:
    """(rule name, violation mask) in the order a message is judged; first violated rule is reported."""
    checks: list[tuple[str, pa.Array]] = [
        (f"missing_field:{name}", pc.is_null(t[name])) for name in REQUIRED[stream]
    ]
    checks += [
        (
            "unsupported_schema_version",
            pc.invert(
                pc.is_in(t["schema_version"], pa.array(sorted(rules.supported_schema_versions), pa.int32()))
            ),
        ),
        ("unknown_exchange", pc.invert(pc.is_in(t["exchange"], pa.array(sorted(rules.known_exchanges))))),
        ("empty_symbol", pc.equal(pc.binary_length(t["symbol"]), 0)),
        ("seq_not_positive", pc.less(t["seq"], 1)),
        ("session_not_positive", pc.less(t["session"], 1)),
        ("ts_not_positive", pc.less_equal(t["ts"], 0)),
        ("ts_in_future", pc.greater(t["ts"], now_us + rules.future_tolerance_us)),
    ]
    if stream == "trades":
        checks += [
            ("price_not_finite", pc.invert(pc.is_finite(t["price"]))),
            ("price_not_positive", pc.less_equal(t["price"], 0)),
            ("qty_not_positive", pc.less_equal(t["qty"], 0)),
        ]
    elif stream == "quotes":
        for side in ("bid", "ask"):
            checks += [
                (f"{side}_not_finite", pc.invert(pc.is_finite(t[side]))),
                (f"{side}_not_positive", pc.less_equal(t[side], 0)),
            ]
        checks += [
            ("size_negative", pc.or_(pc.less(t["bid_size"], 0), pc.less(t["ask_size"], 0))),
        ]
    else:
        kinds = pa.array(REFERENCE_KINDS)
        checks.append(("unknown_reference_kind", pc.invert(pc.is_in(t["kind"], kinds))))
        for name in ("amount", "gross_amount", "ratio"):
            checks.append((f"{name}_not_finite", pc.invert(pc.is_finite(t[name]))))
    return checks


def _validate(
    stream: Stream,
    t: pa.Table,
    index: Sequence[int],
    rules: ValidationRules,
    now_us: int,
    rejects: list[Reject],
) -> pa.Array:
    """Append a Reject for each rule-breaking row; return the keep mask over ``t``.

    One pass ORs every rule's violations together (nulls count as "not violated"); only a batch
    that has a bad row pays for working out which rule each bad row broke first.
    """
    masks = _rule_masks(stream, t, rules, now_us)
    any_bad = masks[0][1]
    for _, mask in masks[1:]:
        any_bad = pc.or_kleene(any_bad, mask)
    if not pc.any(any_bad).as_py():
        return pa.array(np.ones(t.num_rows, dtype=bool))
    bad = pa.array(np.zeros(t.num_rows, dtype=bool))
    for rule, mask in masks:
        fresh = pc.and_(pc.fill_null(mask, False), pc.invert(bad))
        if pc.any(fresh).as_py():
            for row in pc.indices_nonzero(fresh).to_pylist():
                rejects.append(
                    Reject(index[row], "validate", rule, _describe(t, row, rule), "ValidationError")
                )
            bad = pc.or_(bad, fresh)
    return pc.invert(bad)


def _describe(t: pa.Table, row: int, rule: str) -> str:
    """The offending value, e.g. ``price=-1.0``, for the DLQ reason header."""
    if rule.startswith("missing_field:"):
        return f"{rule.split(':', 1)[1]} is missing or null"
    names = [n for n in t.column_names if rule.startswith(n + "_")] or (
        ["bid_size", "ask_size"] if rule == "size_negative" else []
    )
    if not names and rule == "unknown_exchange":
        names = ["exchange"]
    return ", ".join(f"{n}={t[n][row].as_py()!r}" for n in names) or rule


def decode_batch(
    stream: Stream,
    payloads: list[bytes],
    partitions: Sequence[int] | np.ndarray,
    offsets: Sequence[int] | np.ndarray,
    rules: ValidationRules,
    now_us: int,
) -> DecodedBatch:
    """Decode ``payloads`` (one Kafka batch of one stream) into validated rows plus rejects.

    ``partitions``/``offsets`` are parallel to ``payloads`` and become the ``kafka_partition`` and
    ``kafka_offset`` columns: the live buffer, the hybrid read and the deferred backfill all need
    to know exactly which Kafka record every row came from.
    """
    try:
        return _decode_batch(stream, payloads, partitions, offsets, rules, now_us)
    except Exception as e:  # bad bytes must never stop ingest
        if len(payloads) <= 1:
            return DecodedBatch(
                _nullable(output_schema(stream)).empty_table(), [_internal(0, e)] if payloads else []
            )
    # Something unforeseen spoiled the batch: judge each message alone, so only the message that
    # causes it is refused (as ``internal``) and every other one gets its normal verdict.
    parts: list[pa.Table] = []
    rejects: list[Reject] = []
    for i, raw in enumerate(payloads):
        one = decode_batch(stream, [raw], partitions[i : i + 1], offsets[i : i + 1], rules, now_us)
        parts.append(one.rows)
        rejects += [Reject(i, r.stage, r.rule, r.detail, r.exception) for r in one.rejects]
    return DecodedBatch(pa.concat_tables(parts), rejects)


def _decode_batch(
    stream: Stream,
    payloads: list[bytes],
    partitions: Sequence[int] | np.ndarray,
    offsets: Sequence[int] | np.ndarray,
    rules: ValidationRules,
    now_us: int,
) -> DecodedBatch:
    rejects: list[Reject] = []
    index: Sequence[int] = range(len(payloads))
    cap = rules.max_message_bytes
    lengths = _lengths(payloads)
    oversize = np.flatnonzero(lengths > cap).tolist()
    if oversize:
        for i in oversize:
            rejects.append(
                Reject(
                    i,
                    "decode",
                    "oversize",
                    f"{len(payloads[i])} > {rules.max_message_bytes} bytes",
                    "ValidationError",
                )
            )
        skip = set(oversize)
        index = [i for i in index if i not in skip]
    if oversize:
        table = _parse_columnar(stream, [payloads[i] for i in index])
    else:
        table = _parse_columnar(stream, payloads, lengths)
    if table is None:
        index = _decode_one_by_one(stream, payloads, index, rejects)
        table = _parse_columnar(stream, [payloads[i] for i in index])
        if table is None:  # msgspec accepted what Arrow cannot parse: judge such messages one at a time
            index, table = _parse_each(stream, payloads, index, rejects)
    keep = _validate(stream, table, index, rules, now_us, rejects)
    rows = _with_lineage(stream, table, index, partitions, offsets, now_us)
    if rejects:
        rows = rows.filter(keep)
        rejects.sort(key=lambda r: r.index)
    return DecodedBatch(rows=rows, rejects=rejects)


def _parse_each(
    stream: Stream, payloads: list[bytes], index: Sequence[int], rejects: list[Reject]
) -> tuple[list[int], pa.Table]:
    kept: list[int] = []
    parts: list[pa.Table] = []
    for i in index:
        one = _parse_columnar(stream, [payloads[i]])
        if one is None:
            rejects.append(
                Reject(i, "decode", "malformed", "not parseable as the wire schema", "ArrowInvalid")
            )
        else:
            kept.append(i)
            parts.append(one)
    table = pa.concat_tables(parts) if parts else arrow_wire_schema(stream).empty_table()
    return kept, table


def _with_lineage(
    stream: Stream,
    t: pa.Table,
    index: Sequence[int],
    partitions: Sequence[int] | np.ndarray,
    offsets: Sequence[int] | np.ndarray,
    now_us: int,
) -> pa.Table:
    n = t.num_rows
    part = np.asarray(partitions, dtype=np.int32)
    off = np.asarray(offsets, dtype=np.int64)
    if len(index) != len(part):
        take = np.asarray(index, dtype=np.int64)
        part, off = part[take], off[take]
    columns = [t[name] for name in t.column_names]
    ts_pos = t.column_names.index("ts")
    columns[ts_pos] = t["ts"].cast(TS_TYPE)
    columns += [
        pa.array(np.full(n, now_us, dtype="datetime64[us]")).cast(TS_TYPE),
        pa.array(part),
        pa.array(off),
    ]
    return pa.Table.from_arrays(columns, schema=_nullable(output_schema(stream)))


def _nullable(schema: pa.Schema) -> pa.Schema:
    # Rows are cast to the strict (non-null) schema only after rule filtering removed null rows.
    return pa.schema([f.with_nullable(True) for f in schema])
