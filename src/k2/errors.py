"""Every error k2 raises on purpose, in one place.

Each carries the facts an operator needs to act (topic, partition, offset, snapshot id) as
attributes as well as in its message, so logs and metrics can label them without parsing text.
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "CommitConflict",
    "ConfigError",
    "DeadLetterTooLarge",
    "FeedError",
    "K2Error",
    "OffsetsMissing",
    "QueryRejected",
    "QueryTimeout",
    "ValidationError",
]


class K2Error(Exception):
    """Base of all k2 errors."""


class ConfigError(K2Error):
    """The configuration is invalid or a referenced file is missing."""


class BrokerError(K2Error):
    """The local Kafka broker could not be fetched, formatted, started or reached."""


class FeedError(K2Error):
    """A feed could not read its source or deliver to Kafka."""


class ValidationError(K2Error):
    """A market message broke a wire-format rule. ``rule`` names the rule (e.g. ``price_not_positive``)."""

    def __init__(self, rule: str, detail: str = "") -> None:
        self.rule = rule
        self.detail = detail
        super().__init__(f"{rule}: {detail}" if detail else rule)


class DeadLetterTooLarge(K2Error):
    """Not even a dead letter's ``k2.*`` headers fit the DLQ topic's record size limit.

    Every other part of a dead letter can be cut to fit, so this means a DLQ topic with an
    absurdly small ``max.message.bytes``; raising stops ingest rather than losing the letter.
    """

    def __init__(self, topic: str, partition: int, offset: int, limit: int, needed: int) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.limit = limit
        self.needed = needed
        super().__init__(
            f"dead letter of {topic}[{partition}]@{offset} needs at least {needed} bytes for its k2 "
            f"headers; the DLQ topic accepts {limit}: raise the DLQ topic's max.message.bytes"
        )


class OffsetsMissing(K2Error):
    """A table holds rows but no snapshot says which Kafka offsets they cover.

    Starting anyway would mean guessing where to resume, which either loses or duplicates rows,
    so ingest refuses to start until an operator decides.
    """

    def __init__(self, table: str, snapshot_id: int | None) -> None:
        self.table = table
        self.snapshot_id = snapshot_id
        super().__init__(
            f"table {table} has rows (snapshot {snapshot_id}) but no k2 offsets in its snapshot history; "
            "refusing to guess a resume position"
        )


class CommitConflict(K2Error):
    """Another writer committed offsets for a partition this writer holds: this writer is stale.

    Raised instead of committing, so a zombie writer can never append rows a newer owner of the
    partition has already written.
    """

    def __init__(
        self, table: str, topic: str, partition: int, expected: int | None, found: int | None
    ) -> None:
        self.table = table
        self.topic = topic
        self.partition = partition
        self.expected = expected
        self.found = found
        super().__init__(
            f"{table}: {topic}[{partition}] stored offset is {found}, this writer expected {expected}; "
            "another writer owns this partition"
        )


class QueryRejected(K2Error):
    """A query k2 will not run, said before running it. ``reason`` is a short stable label
    (``not_select``, ``multiple_statements``, ``too_long``, ``parse_error``, ``bad_parameter``...)
    for metrics and clients; ``detail`` is the human explanation. The API answers 400."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class QueryTimeout(K2Error):
    """A query ran past its time limit and was interrupted (the API answers 408)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"query interrupted after {seconds:g} s")
