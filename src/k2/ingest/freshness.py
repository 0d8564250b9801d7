"""Freshness, sampled: how long after its Kafka create time a message reaches the live buffer.

Per class (tier1..tier3, low), because what degradation promises is that tier 1 stays fresh
while the rest may wait. Sampled (at most 32 messages spread over each batch) so the hot path
pays per batch, not per message: about 10 µs a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from confluent_kafka import TIMESTAMP_CREATE_TIME, Message

__all__ = ["PER_BATCH", "sample_freshness"]

PER_BATCH = 32

Sample = tuple[float, str, float]  # (wall clock s, class, seconds since create time)


def sample_freshness(
    samples: list[Sample],
    msgs: Sequence[Message],
    class_of: Callable[[bytes | None], str],
    now_s: float,
    keep: int,
) -> None:
    """Append samples of ``msgs`` (just buffered at ``now_s``) to ``samples``, keeping the newest ``keep``."""
    step = max(1, len(msgs) // PER_BATCH)
    now_ms = now_s * 1000
    for m in msgs[::step]:
        kind, ts_ms = m.timestamp()
        if kind == TIMESTAMP_CREATE_TIME and ts_ms > 0:
            samples.append((now_s, class_of(m.key()), (now_ms - ts_ms) / 1000))
    if len(samples) > keep:
        del samples[: len(samples) - keep]
