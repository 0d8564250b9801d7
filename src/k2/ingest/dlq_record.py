"""One DLQ record: what it holds, how many bytes it takes, and how it is cut to fit the DLQ topic.

A dead letter is the refused record's own key, value and headers (a null header value stays
null) plus ``k2.*`` headers saying where it came from and why it was refused. It must fit the DLQ
topic's ``max.message.bytes``; when it does not, parts are given up in the order an operator
needs them least:

1. the tail of the value: the longest prefix that fits is kept and ``k2.value.truncated`` says
   how long the value was and how much of it was kept;
2. the original headers, all of them, only when with them not even an empty value fits
   (``k2.headers.dropped``);
3. the tail of the key (``k2.key.truncated``), for a DLQ topic smaller than a source key.

Every record carries ``k2.value.sha256`` of the whole original value, so a cut record can still be
matched to its source. The ``k2.*`` headers themselves are never cut; if they alone do not fit,
:class:`~k2.errors.DeadLetterTooLarge` is raised.

Sizes are those of Kafka's record batch v2, because the broker checks ``max.message.bytes``
against a whole batch: 61 bytes of batch header, then the record with zigzag-varint lengths.
:func:`record_bytes` is exact except for three fields the producer fills in (record length,
timestamp delta, offset delta), which it counts at their widest. It therefore never under-counts
what the broker checks (Kafka 4.1.1, 16 MiB limit: the largest value accepted alone is
16,777,142 bytes, limit - 74; ``record_bytes`` says limit + 14 for it), nor what librdkafka checks
against the producer's ``message.max.bytes`` (36 bytes of overhead, smaller varints, no batch).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from k2.errors import DeadLetterTooLarge

__all__ = [
    "DETAIL_MAX_BYTES",
    "DeadLetter",
    "DlqRecord",
    "Headers",
    "build_record",
    "record_bytes",
]

Headers = list[tuple[str, bytes | None]]

DETAIL_MAX_BYTES = 1000
VALUE_SHA256 = "k2.value.sha256"
VALUE_TRUNCATED = "k2.value.truncated"
KEY_TRUNCATED = "k2.key.truncated"
HEADERS_DROPPED = "k2.headers.dropped"
_CUT_NOTES = frozenset({VALUE_TRUNCATED, KEY_TRUNCATED, HEADERS_DROPPED})

_BATCH_OVERHEAD = 61  # baseOffset, length, epoch, magic, crc, attributes, ... record count
_RECORD_WIDEST_FIXED = 5 + 1 + 10 + 5  # length, attributes, timestampDelta, offsetDelta


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A refused source record and why: the input to the DLQ."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None
    stage: str
    rule: str
    detail: str
    exception: str


@dataclass(frozen=True, slots=True)
class DlqRecord:
    """What is produced to the DLQ topic for one dead letter."""

    key: bytes | None
    value: bytes | None
    headers: Headers

    @property
    def size(self) -> int:
        return record_bytes(self.key, self.value, self.headers)

    @property
    def cut(self) -> bool:
        """Whether part of the dead letter was given up to fit."""
        return any(name in _CUT_NOTES for name, _ in self.headers)

    def header(self, name: str) -> bytes | None:
        """The first header called ``name`` (None if absent)."""
        return next((v for k, v in self.headers if k == name), None)


def record_bytes(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Upper bound of the bytes a batch holding just this record takes (what the broker checks)."""
    return (
        _BATCH_OVERHEAD
        + _RECORD_WIDEST_FIXED
        + _field_bytes(key)
        + _field_bytes(value)
        + _varint_bytes(len(headers))
        + _headers_bytes(headers)
    )


def build_record(letter: DeadLetter, writer_id: str, limit: int) -> DlqRecord:
    """The DLQ record for ``letter``, whole if it fits ``limit`` bytes, otherwise cut to fit.

    Raises:
        DeadLetterTooLarge: not even the ``k2.*`` headers fit ``limit``.
    """
    k2 = _k2_headers(letter, writer_id)
    key, value, original = letter.key, letter.value, list(letter.headers or [])
    record = _cut(value, lambda v, note: DlqRecord(key, v, [*k2, *note, *original]), VALUE_TRUNCATED, limit)
    if record is None and original:
        k2 = [*k2, (HEADERS_DROPPED, f"count={len(original)} bytes={_headers_bytes(original)}".encode())]
        record = _cut(value, lambda v, note: DlqRecord(key, v, [*k2, *note]), VALUE_TRUNCATED, limit)
    if record is None:
        empty = None if value is None else b""
        k2 += [(VALUE_TRUNCATED, _cut_note(len(value), 0))] if value else []
        record = _cut(key, lambda k, note: DlqRecord(k, empty, [*k2, *note]), KEY_TRUNCATED, limit)
        if record is None:
            floor = DlqRecord(None if key is None else b"", empty, k2).size
            raise DeadLetterTooLarge(letter.topic, letter.partition, letter.offset, limit, floor)
    return record


def _k2_headers(letter: DeadLetter, writer_id: str) -> Headers:
    return [
        ("k2.source.topic", letter.topic.encode()),
        ("k2.source.partition", str(letter.partition).encode()),
        ("k2.source.offset", str(letter.offset).encode()),
        ("k2.stage", letter.stage.encode()),
        ("k2.reason", letter.rule.encode()),
        ("k2.detail", _utf8_prefix(letter.detail, DETAIL_MAX_BYTES)),
        ("k2.exception", letter.exception.encode()),
        ("k2.writer", writer_id.encode()),
        (VALUE_SHA256, hashlib.sha256(letter.value or b"").hexdigest().encode()),
    ]


def _cut(
    data: bytes | None, make: Callable[[bytes | None, Headers], DlqRecord], note_name: str, limit: int
) -> DlqRecord | None:
    """``make(data, [])`` if it fits, else ``make`` with the longest prefix of ``data`` that fits
    plus a note header saying so; None if not even an empty prefix fits.

    The note is sized for the widest kept length, and a shorter prefix never has a longer
    length varint, so cutting ``data`` by exactly the overshoot always fits.
    """
    whole = make(data, [])
    if whole.size <= limit:
        return whole
    if not data:
        return None
    over = make(data, [(note_name, _cut_note(len(data), len(data)))]).size - limit
    kept = len(data) - over
    if kept < 0:
        return None
    return make(data[:kept], [(note_name, _cut_note(len(data), kept))])


def _cut_note(original: int, kept: int) -> bytes:
    return f"original={original} kept={kept}".encode()


def _utf8_prefix(text: str, max_bytes: int) -> bytes:
    """At most ``max_bytes`` of ``text`` as UTF-8, never ending inside a character."""
    return text.encode()[:max_bytes].decode(errors="ignore").encode()


def _headers_bytes(headers: Headers) -> int:
    return sum(_field_bytes(name.encode()) + _field_bytes(value) for name, value in headers)


def _field_bytes(data: bytes | None) -> int:
    """A length-prefixed field: a varint length (-1 for null) and the bytes."""
    return _varint_bytes(-1) if data is None else _varint_bytes(len(data)) + len(data)


def _varint_bytes(n: int) -> int:
    """Bytes of ``n`` as a zigzag varint, Kafka's encoding of lengths in a v2 record."""
    zigzag = (n << 1) ^ (n >> 63)
    size = 1
    while zigzag >= 0x80:
        zigzag >>= 7
        size += 1
    return size
