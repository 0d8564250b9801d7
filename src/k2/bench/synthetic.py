"""Synthetic market rows, built straight as Arrow in the tables' own schema.

For the query benchmark and the query-engine tests: history the way a day of ingest leaves it
(many commits, each one Parquet file per day partition with stored offsets) without going through
Kafka. Deterministic for a seed. Prices follow a random walk per symbol; ``ts`` is strictly
increasing per partition so offset order and time order agree, as they do for a real feed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from k2.lake.tables import market_arrow_schema
from k2.lake.writer import TableWriter

__all__ = ["SyntheticTape", "write_history"]


@dataclass
class SyntheticTape:
    """A stream of trades over ``symbols`` spread across ``partitions`` (by symbol, as the feed keys)."""

    symbols: list[str]
    partitions: int
    start_us: int
    step_us: int = 1_000  # one trade per millisecond across the whole tape
    exchange: str = "SIM"
    session: int = 20260101
    seed: int = 7

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._next_offset = [0] * self.partitions
        self._seq = np.zeros(len(self.symbols), dtype=np.int64)
        self._price = np.full(len(self.symbols), 100.0)
        self._t = self.start_us

    def trades(self, n: int) -> pa.Table:
        """The next ``n`` trades, in the ``trades`` table's schema."""
        sym_idx = self._rng.integers(0, len(self.symbols), n)
        ts = self._t + np.arange(n, dtype=np.int64) * self.step_us
        self._t = int(ts[-1]) + self.step_us
        # seq per symbol: running count of that symbol so far
        seq = np.empty(n, dtype=np.int64)
        order = np.argsort(sym_idx, kind="stable")
        counts = np.bincount(sym_idx, minlength=len(self.symbols))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        ranks = np.arange(n) - np.repeat(starts, counts)
        seq[order] = self._seq[sym_idx[order]] + ranks + 1
        self._seq += counts
        moves = self._rng.normal(0, 0.05, n)
        price = np.round(np.maximum(self._price[sym_idx] + moves, 0.01), 3)
        self._price[sym_idx] = price
        partition = (sym_idx % self.partitions).astype(np.int32)
        offset = np.empty(n, dtype=np.int64)
        for p in range(self.partitions):
            mine = partition == p
            k = int(mine.sum())
            offset[mine] = self._next_offset[p] + np.arange(k)
            self._next_offset[p] += k
        symbols = pa.array(self.symbols).take(pa.array(sym_idx))
        tstype = pa.timestamp("us", tz="UTC")
        return pa.table(
            {
                "schema_version": pa.array(np.ones(n, np.int32)),
                "exchange": pa.array([self.exchange] * n),
                "symbol": symbols,
                "session": pa.array(np.full(n, self.session, np.int32)),
                "seq": pa.array(seq),
                "ts": pa.array(ts, tstype),
                "price": pa.array(price),
                "qty": pa.array(self._rng.integers(1, 5_000, n)),
                "conditions": pa.array([[]] * n, pa.list_(pa.string())),
                "trade_id": pa.array(np.char.add("t", seq.astype(str)).tolist()),
                "venue": pa.nulls(n, pa.string()),
                "ingest_ts": pa.array(ts + 50_000, tstype),
                "kafka_partition": pa.array(partition),
                "kafka_offset": pa.array(offset),
            },
            schema=market_arrow_schema("trades"),
        )

    def offsets(self) -> dict[int, int]:
        """Next offset per partition after everything generated so far."""
        return dict(enumerate(self._next_offset))


def write_history(writer: TableWriter, tape: SyntheticTape, rows: int, commits: int) -> int:
    """Append ``rows`` trades from ``tape`` in ``commits`` commits, with offsets, as ingest would."""
    from k2.ingest.committer import prepare_rows

    per = max(1, rows // commits)
    written = 0
    stored: dict[int, int | None] = {p: None for p in range(tape.partitions)}
    stored.update(writer.stored_offsets())
    while written < rows:
        n = min(per, rows - written)
        batch = prepare_rows("trades", tape.trades(n))
        offsets = tape.offsets()
        writer.commit(batch, offsets, dict(stored))
        stored.update(offsets)
        written += n
    return written
