"""Where refused messages go: every refusal in ingest becomes one dead letter of the original record.

Three places refuse a message, and all route through here so a DLQ record always looks the same:
decoding (``Reject``: decode or validate stage), sequencing (an identity the tracker cannot place)
and the commit (rows ``k2.lake.probe`` found unwritable; their original records are read again
from Kafka, since the buffer no longer holds them). Each method returns how many it dead-lettered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyarrow as pa
from confluent_kafka import Message

from k2.ingest.dlq import DeadLetter, DeadLetterQueue
from k2.ingest.refetch import fetch_records
from k2.validation import Reject
from k2.wire import encoder

__all__ = ["DeadLetterRouter"]


class DeadLetterRouter:
    def __init__(
        self, dlq: DeadLetterQueue, bootstrap: str, client_properties: Mapping[str, object] | None = None
    ) -> None:
        self.dlq = dlq
        self._bootstrap = bootstrap
        self._properties = dict(client_properties or {})

    def refused(self, topic: str, msgs: Sequence[Message], rejects: Sequence[Reject]) -> int:
        """Dead-letter each decode or validation ``Reject`` (``index`` into ``msgs``)."""
        for r in rejects:
            self._send(topic, msgs[r.index], r.stage, r.rule, r.detail, r.exception)
        return len(rejects)

    def unplaceable(self, topic: str, msgs: Sequence[Message], rows: pa.Table) -> int:
        """Dead-letter the messages behind ``rows``: identities the sequence tracker cannot place."""
        where = {(m.partition(), m.offset()): m for m in msgs}
        coords = zip(rows["kafka_partition"].to_pylist(), rows["kafka_offset"].to_pylist(), strict=True)
        for p, o in coords:
            self._send(
                topic,
                where[(p, o)],
                "sequence",
                "unplaceable",
                "session older than retained, or seq of a gap already declared lost",
                "SequenceUnplaceable",
            )
        return rows.num_rows

    def unwritable(self, topic: str, rows: pa.Table, error: BaseException) -> int:
        """Dead-letter rows a commit could not write, with their original records read again."""
        coords = list(zip(rows["kafka_partition"].to_pylist(), rows["kafka_offset"].to_pylist(), strict=True))
        originals = fetch_records(self._bootstrap, topic, coords, self._properties)
        exc = type(error).__name__
        detail = f"{exc}: {error}"
        for (p, o), row in zip(coords, rows.to_pylist(), strict=True):
            m = originals.get((p, o))
            if m is not None:
                self._send(topic, m, "commit", "unwritable", detail, exc)
                continue
            # Kafka no longer has it (retention): the decoded row is all that is left to keep.
            note = "original no longer in Kafka; value is the decoded row. "
            letter = DeadLetter(
                topic, p, o, None, encoder.encode(row), None, "commit", "unwritable", note + detail, exc
            )
            self.dlq.send(letter)
        return len(coords)

    def _send(self, topic: str, m: Message, stage: str, rule: str, detail: str, exc: str) -> None:
        self.dlq.send(
            DeadLetter(
                topic, m.partition(), m.offset(), m.key(), m.value(), m.headers(), stage, rule, detail, exc
            )
        )
