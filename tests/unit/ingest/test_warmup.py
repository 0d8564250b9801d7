"""The start-up warm-up must exercise the real hot path: every made-up message has to be valid."""

from __future__ import annotations

from k2.ingest.warmup import _MESSAGES, warm_up
from k2.validation import ValidationRules

RULES = ValidationRules(
    known_exchanges=frozenset({"SIM", "ASX"}),
    supported_schema_versions=frozenset({1}),
    max_message_bytes=16_384,
    future_tolerance_us=300_000_000,
)


def test_every_warm_up_message_lands_in_every_stream() -> None:
    # If a rule change made the samples invalid, the warm-up would silently stop warming the
    # sequencing and Parquet stages; this is where that shows.
    assert warm_up(RULES) == 3 * _MESSAGES


def test_no_known_exchange_means_nothing_to_warm() -> None:
    assert warm_up(ValidationRules(frozenset(), frozenset({1}), 16_384, 0)) == 0
