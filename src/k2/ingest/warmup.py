"""Run every stage of the hot path once, on made-up messages, before the first real batch.

The first call of Arrow's JSON reader, of each compute kernel, of the numpy paths in sequencing
and of the Parquet writer costs several times what later calls do: the first batch of a run took
0.3 s where the next ones took 0.1 s (k2 bench ingest). Paid at start-up, it is not paid by the
first messages after a start or a restart, when the consumer is furthest behind.

Nothing here touches Kafka or a table: the sequencing state and the Parquet output are thrown away.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pyarrow.parquet as pq

from k2.dedup import Dedup
from k2.ingest.committer import prepare_rows
from k2.ingest.sequencing import PartitionSequencing, apply_sequencing
from k2.sequence_tracker import SequenceTracker
from k2.validation import ValidationRules, decode_batch
from k2.wire import SCHEMA_VERSION, STREAMS, Quote, Reference, Stream, Trade, encoder

__all__ = ["warm_up"]

_MESSAGES = 2_000  # enough for the vectorised paths to run as they do on real batches


def warm_up(rules: ValidationRules) -> int:
    """Decode, validate, sequence, sort and encode ``_MESSAGES`` made-up messages per stream.

    Returns how many rows went all the way through (0 if no exchange is configured).
    """
    if not rules.known_exchanges or not rules.supported_schema_versions:
        return 0
    landed = 0
    exchange = min(rules.known_exchanges)
    versions = rules.supported_schema_versions
    version = SCHEMA_VERSION if SCHEMA_VERSION in versions else max(versions)
    now_us = time.time_ns() // 1000
    for stream in STREAMS:
        payloads = [
            encoder.encode(_sample(stream, exchange, version, seq, now_us)) for seq in range(1, _MESSAGES + 1)
        ]
        n = len(payloads)
        decoded = decode_batch(
            stream, payloads, np.zeros(n, np.int32), np.arange(n, dtype=np.int64), rules, now_us
        )
        state = {0: PartitionSequencing(SequenceTracker(), Dedup())}
        rows = apply_sequencing(decoded.rows, state, now_us).rows
        if rows.num_rows:
            pq.write_table(prepare_rows(stream, rows), io.BytesIO(), compression="zstd")
        landed += rows.num_rows
    return landed


def _sample(stream: Stream, exchange: str, version: int, seq: int, now_us: int) -> Trade | Quote | Reference:
    symbol, ts = f"WARMUP{seq % 20}", now_us - 1_000_000 + seq
    seq = seq // 20 + 1  # in order within each symbol
    if stream == "trades":
        return Trade(
            schema_version=version, exchange=exchange, symbol=symbol, session=1, seq=seq, ts=ts,
            price=1.0, qty=1, conditions=["warmup"], trade_id=str(seq),
        )  # fmt: skip
    if stream == "quotes":
        return Quote(
            schema_version=version, exchange=exchange, symbol=symbol, session=1, seq=seq, ts=ts,
            bid=1.0, ask=1.01, bid_size=1, ask_size=1,
        )  # fmt: skip
    return Reference(
        schema_version=version, exchange=exchange, symbol=symbol, session=1, seq=seq, ts=ts, kind="listing"
    )
