"""Decoded history files in memory, each with a symbol index: the API's historical DB.

Why a cache and not a scan per query: a day of ingest leaves many small files (one per table and
day per commit), each holding every symbol. Parquet statistics cannot prune a symbol inside a file
of one row group, so "BHP's last 100 trades" would decode every file's columns on every query
(about 100 ms per 2M rows measured here). Data files are immutable, so each is read once, kept as
Arrow (LRU by bytes, ``api.history_cache_bytes``) with the row range of every symbol, and a query
for one symbol slices those ranges zero-copy: the kdb+ HDB shape (sym-sorted, mapped once).

k2 writes every file sorted by (symbol, ts) within its day partition; a file that is not (written by
another engine) is sorted once on load. Reads go through the table's pyiceberg ``FileIO``, so local
warehouses and S3 take the same path.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["TOTALS_SCHEMA", "CachedFile", "FileCache", "trade_totals"]


TOTALS_SCHEMA = pa.schema(
    [
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("session", pa.int32()),
        ("pq", pa.float64()),
        ("q", pa.int64()),
        ("n", pa.int64()),
    ]
)


def trade_totals(rows: pa.Table | None) -> pa.Table:
    """Per (exchange, symbol, session): sum(price * qty), sum(qty), count — what a VWAP adds up."""
    if rows is None or rows.num_rows == 0:
        return TOTALS_SCHEMA.empty_table()
    grouped = (
        pa.table(
            {
                "exchange": rows["exchange"],
                "symbol": rows["symbol"],
                "session": rows["session"],
                "pq": pc.multiply(rows["price"], rows["qty"].cast(pa.float64())),
                "q": rows["qty"],
            }
        )
        .group_by(["exchange", "symbol", "session"])
        .aggregate([("pq", "sum"), ("q", "sum"), ("q", "count")])
    )
    return pa.table(
        [
            grouped["exchange"],
            grouped["symbol"],
            grouped["session"],
            grouped["pq_sum"],
            grouped["q_sum"],
            grouped["q_count"],
        ],
        schema=TOTALS_SCHEMA,
    )


@dataclass(frozen=True, slots=True)
class CachedFile:
    table: pa.Table  # sorted by (symbol, ts)
    index: dict[str, tuple[int, int]]  # symbol -> [start, stop) row range
    one_exchange: bool = True  # every row has the same exchange (the common case)
    # Derived once per file, on first use (per-day totals, partial bars per symbol and width).
    memo: dict[str, pa.Table] = field(default_factory=dict)

    def totals(self, symbols: frozenset[str] | None) -> pa.Table:
        """Per (exchange, symbol, session): sum(price * qty) ``pq``, sum(qty) ``q`` and the count
        ``n`` of this file's trades. A file never changes, so a day's VWAP over history adds up
        these small tables instead of re-reading every trade (10M rows: ~200 files x symbols)."""
        totals = self.memo.get("totals")
        if totals is None:
            totals = self.memo["totals"] = trade_totals(self.table)
        if symbols is None:
            return totals
        return totals.filter(pc.is_in(totals["symbol"], pa.array(sorted(symbols), pa.string())))

    def rows(
        self, symbols: frozenset[str] | None, start_us: int | None = None, end_us: int | None = None
    ) -> pa.Table:
        if symbols is None:
            part = self.table
        else:
            slices = [
                self.table.slice(a, b - a)
                for s in sorted(symbols)
                if (r := self.index.get(s))
                for a, b in [r]
            ]
            if not slices:
                return self.table.slice(0, 0)
            part = slices[0] if len(slices) == 1 else pa.concat_tables(slices)
        if (start_us is None and end_us is None) or part.num_rows == 0:
            return part
        ts = part["ts"].cast(pa.int64())
        mask = None
        if start_us is not None:
            mask = pc.greater_equal(ts, start_us)
        if end_us is not None:
            upper = pc.less(ts, end_us)
            mask = upper if mask is None else pc.and_(mask, upper)
        return part.filter(mask)

    def last_rows(self, symbols: frozenset[str] | None) -> pa.Table:
        """The last row (latest ``ts``) of each symbol and exchange in this file: rows are sorted by
        (symbol, ts), so a symbol's last row is its range's last unless it trades on several
        exchanges (then each exchange's last row is kept, or the snapshot would lose a venue)."""
        wanted = self.index if symbols is None else {s: self.index[s] for s in symbols if s in self.index}
        if self.one_exchange:
            return self.table.take(pa.array([stop - 1 for _, stop in wanted.values()], pa.int64()))
        n = self.table.num_rows
        symbol_code = np.zeros(n, np.int64)
        for code, (start, stop) in enumerate(self.index.values()):
            symbol_code[start:stop] = code
        venue = pc.dictionary_encode(self.table["exchange"]).combine_chunks().indices.to_numpy()
        key = symbol_code * (int(venue.max()) + 1) + venue
        _, first_from_end = np.unique(key[::-1], return_index=True)
        last = np.sort(n - 1 - first_from_end)
        wanted_codes = [code for code, s in enumerate(self.index) if s in wanted]
        last = last[np.isin(symbol_code[last], wanted_codes)]
        return self.table.take(pa.array(last, pa.int64()))


def _load(data: pa.Table) -> CachedFile:
    sym = data["symbol"]
    if data.num_rows > 1 and not pc.all(pc.less_equal(sym[:-1], sym[1:])).as_py():
        # sequence_gaps files come through here too, and have no ts.
        data = data.sort_by([(c, "ascending") for c in ("symbol", "ts") if c in data.column_names])
        sym = data["symbol"]
    counts = pc.value_counts(sym)  # first-occurrence order == sorted order for sorted input
    index: dict[str, tuple[int, int]] = {}
    start = 0
    for value, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True):
        index[value] = (start, start + n)
        start += n
    one_exchange = "exchange" not in data.column_names or pc.count_distinct(data["exchange"]).as_py() <= 1
    return CachedFile(data.combine_chunks(), index, one_exchange)


class FileCache:
    """LRU of decoded files by Arrow bytes. ``opener(path)`` returns a readable file object."""

    def __init__(self, opener: Callable[[str], object], max_bytes: int, schema: pa.Schema | None = None):
        self._open = opener
        self._max = max_bytes
        self._files: OrderedDict[str, CachedFile] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, path: str) -> CachedFile:
        with self._lock:
            f = self._files.get(path)
            if f is not None:
                self._files.move_to_end(path)
                self.hits += 1
                return f
        # Read outside the lock: decoding releases the GIL, other queries go on meanwhile.
        with self._open(path) as fh:  # type: ignore[attr-defined]
            f = _load(pq.read_table(fh))
        with self._lock:
            self.misses += 1
            if path not in self._files:
                self._files[path] = f
                self._bytes += f.table.nbytes
                while self._bytes > self._max and len(self._files) > 1:
                    _, old = self._files.popitem(last=False)
                    self._bytes -= old.table.nbytes
        return f

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._files)
