"""A synthetic market with exactly accounted faults, for load tests and exactly-once checks.

Symbols are ``SIM<tier><block><nnn>``: the fourth character is the activity tier (1 most active,
3 least), then a block letter and three digits number the symbol within its tier
(``SIM1A001``, ``SIM1A002``, ..., ``SIM2A001``, ...; see :func:`symbol_tier`). Activity follows
a Zipf law over all symbols ranked tier 1 first, so tier 1 symbols are the busiest.

Each symbol has one mid price doing a log random walk (always positive); trades print at the
mid rounded to the symbol's tick, quotes straddle it with ``bid < ask``. Each trade and quote is
a *market event* with its own ``seq`` per ``(stream, exchange, symbol, session)``; a run starts
with one ``listing`` reference message per symbol (seq 1).

Faults are injected per market event and never overlap, so a :class:`FeedReport` accounts for
them exactly:

* **gap**: 1..5 seqs are skipped just before an event; they are never produced in any form.
  Never before a stream's first event (a stream always starts at seq 1).
* **duplicate**: a byte-identical copy of an event is produced again, later in the same chunk.
* **reorder**: events ``k`` and ``k+1`` of one stream (``k >= 2``) are produced ``k+1`` first.
  Neither is duplicated, poisoned or preceded by a gap, and the next event of the stream
  (``k+2``) follows no gap and starts no reorder, so a reorder is never adjacent to a gap.
* **poison**: an extra message right after a clean event, derived from it (so any identity it
  carries is also produced validly), that ingest must reject. Kinds rotate through
  :data:`POISON_KINDS`, so every kind appears once at least 9 poison messages were produced.

Event time: with ``rate > 0`` event ``n`` happens at ``n / rate`` seconds after the start (bursts
run at ``rate * burst_multiplier``), and :func:`simulate` paces wall time to match. With
``rate == 0`` events are 1 µs apart and the producer runs flat out; bursts then change nothing.

:func:`generate` is the pure part (no Kafka): same config and ``start_ts_us`` give the same
bytes. :func:`simulate` produces what it generates.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from k2.config import Settings, TopicNames
from k2.feeds.producer import FeedProducer, send_paced
from k2.feeds.report import Duplicate, FeedProgress, FeedReport, Gap, Poison, Reorder, StreamRange, utc_iso
from k2.wire import SCHEMA_VERSION, Quote, Reference, Stream, Trade, encoder

__all__ = [
    "POISON_KINDS",
    "SimChunk",
    "Simulation",
    "SimulatorConfig",
    "generate",
    "simulate",
    "symbol_name",
    "symbol_tier",
]

POISON_KINDS: tuple[str, ...] = (
    "malformed",  # not JSON at all (a message cut in half)
    "missing_field",  # a required field absent (trades: price, quotes: bid_size)
    "wrong_type",  # a number sent as a string (trades: price, quotes: bid)
    "non_finite",  # the literal NaN / Infinity token in the JSON text
    "price_not_positive",  # trades: price 0 or negative; quotes: negative bid
    "qty_not_positive",  # trades: qty 0 or negative; quotes: negative bid_size
    "future_ts",  # ts one day after the event (far beyond the 5 minute tolerance)
    "unknown_exchange",  # exchange "NOPE"
    "oversize",  # > 16 KiB (a giant venue / padding string)
)
UNKNOWN_EXCHANGE = "NOPE"
OVERSIZE_BYTES = 17_000
FUTURE_POISON_US = 86_400 * 1_000_000

_CHUNK = 8_192  # market events per chunk; faults never straddle a chunk
_MAX_DUP_DELAY = 256  # a duplicate follows its original by at most this many positions
_MAX_GAP = 5
_UNPACED_EVENT_US = 1  # event time step when rate == 0

_NONE, _GAP, _DUP, _REORDER, _POISON = 0, 1, 2, 3, 4
_STREAMS: tuple[Stream, Stream] = ("trades", "quotes")

# Per tier: (low, high) initial price, log-return sd per event, median trade size.
_TIERS: dict[int, tuple[float, float, float, float]] = {
    1: (20.0, 200.0, 1e-4, 300.0),
    2: (5.0, 50.0, 2e-4, 800.0),
    3: (0.2, 10.0, 4e-4, 3_000.0),
}


class SimulatorConfig(BaseModel):
    """Every knob of a simulator run; each maps 1:1 to a ``k2 feed simulate`` option."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    tier1: int = Field(default=10, ge=0, le=26_000, description="tier-1 (most active) symbols")
    tier2: int = Field(default=40, ge=0, le=26_000, description="tier-2 symbols")
    tier3: int = Field(default=150, ge=0, le=26_000, description="tier-3 (least active) symbols")
    zipf: float = Field(default=1.1, ge=0.0, description="activity of the symbol ranked r is r ** -zipf")
    quote_ratio: float = Field(default=0.6, ge=0.0, le=1.0, description="share of quotes among market events")
    rate: float = Field(default=0.0, ge=0.0, description="market events per second; 0 = as fast as possible")
    messages: int | None = Field(
        default=100_000, ge=0, description="market events (trades + quotes); None = no count limit"
    )
    duration_s: float | None = Field(
        default=None, gt=0, description="rate > 0: event time to cover; rate 0: wall time to run"
    )
    # Probability per market event; faults are exclusive, and a candidate that would overlap
    # another fault is dropped, so the realised counts (in the report) can be a little lower.
    gap_rate: float = Field(default=0.0, ge=0.0, le=0.2)
    duplicate_rate: float = Field(default=0.0, ge=0.0, le=0.2)
    reorder_rate: float = Field(default=0.0, ge=0.0, le=0.2)
    poison_rate: float = Field(default=0.0, ge=0.0, le=0.2)
    burst_multiplier: float = Field(default=1.0, gt=0.0, description="rate multiplier during the burst")
    burst_seconds: float = Field(default=0.0, ge=0.0, description="burst length, seconds of event time")
    burst_start_s: float = Field(default=0.0, ge=0.0, description="burst start, seconds of event time")
    session: int | None = Field(default=None, description="YYYYMMDD; default: UTC date of the start")
    start_ts_us: int | None = Field(default=None, description="event time of the first message; default: now")
    exchange: str = "SIM"

    @model_validator(mode="after")
    def _check(self) -> SimulatorConfig:
        if self.tier1 + self.tier2 + self.tier3 == 0:
            raise ValueError("the simulator needs at least one symbol")
        if self.gap_rate + self.duplicate_rate + self.reorder_rate + self.poison_rate > 0.5:
            raise ValueError("fault rates add up to more than 0.5 of all events")
        if self.session is not None and not 19000101 <= self.session <= 99991231:
            raise ValueError(f"session must be YYYYMMDD, got {self.session}")
        return self


def symbol_name(tier: int, n: int) -> str:
    """The ``n``-th (from 1) symbol of ``tier``: ``SIM1A001``; after ``A999`` comes ``B000``."""
    return f"SIM{tier}{chr(ord('A') + n // 1000)}{n % 1000:03d}"


def symbol_tier(symbol: str) -> int:
    """The activity tier a simulator symbol encodes (``SIM2A017`` -> 2)."""
    return int(symbol[3])


@dataclass
class SimChunk:
    """Messages to produce, in order, and for each the global index of the market event it
    goes with (duplicates and poison take their predecessor's; listings are -1)."""

    messages: list[tuple[Stream, bytes, bytes]]
    event_index: np.ndarray


class _Symbols:
    def __init__(self, config: SimulatorConfig, rng: np.random.Generator) -> None:
        names: list[str] = []
        tiers: list[int] = []
        for tier, count in ((1, config.tier1), (2, config.tier2), (3, config.tier3)):
            names.extend(symbol_name(tier, n) for n in range(1, count + 1))
            tiers.extend([tier] * count)
        self.names = names
        self.keys = [n.encode() for n in names]
        self.tier = np.array(tiers, dtype=np.int64)
        lo = np.array([_TIERS[t][0] for t in tiers])
        hi = np.array([_TIERS[t][1] for t in tiers])
        self.sigma = np.array([_TIERS[t][2] for t in tiers])
        self.log_size = np.log(np.array([_TIERS[t][3] for t in tiers]))
        start = np.exp(rng.uniform(np.log(lo), np.log(hi)))
        self.tick = np.where(start < 2.0, 0.001, 0.01)
        self.decimals = np.where(start < 2.0, 3, 2)
        self.log_mid = np.log(start)
        ranks = np.arange(1, len(names) + 1, dtype=np.float64)
        weights = ranks**-config.zipf
        self.cdf = np.cumsum(weights / weights.sum())

    def __len__(self) -> int:
        return len(self.names)


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each element: 1-based position within its key group (array order), the index of the
    next element with the same key (-1 if none), and the stable sort order by key."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    n = len(keys)
    new = np.empty(n, dtype=bool)
    new[:1] = True
    new[1:] = sk[1:] != sk[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - start + 1
    nxt = np.full(n, -1, dtype=np.int64)
    same_next = np.flatnonzero(~new[1:])  # sorted positions p where p+1 has the same key
    nxt[order[same_next]] = order[same_next + 1]
    return rank, nxt, order


def _grouped_cumsum(values: np.ndarray, keys_sorted_order: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum of ``values`` within each key group, in array order."""
    order = keys_sorted_order
    sv = values[order]
    sk = keys[order]
    cs = np.cumsum(sv)
    n = len(values)
    new = np.empty(n, dtype=bool)
    new[:1] = True
    new[1:] = sk[1:] != sk[:-1]
    start = np.maximum.accumulate(np.where(new, np.arange(n), 0))
    within = cs - cs[start] + sv[start]
    out = np.empty_like(within)
    out[order] = within
    return out


class Simulation:
    """A lazily generated simulator run: iterate it (or :meth:`chunks`) for messages, then read
    :attr:`report`, which is exact for every chunk generated so far."""

    def __init__(
        self, config: SimulatorConfig, topics: TopicNames | None = None, now_us: int | None = None
    ) -> None:
        self.config = config
        self.topics = topics or TopicNames()
        self.start_ts_us = (
            config.start_ts_us
            if config.start_ts_us is not None
            else (now_us if now_us is not None else time.time_ns() // 1_000)
        )
        start_day = datetime.fromtimestamp(self.start_ts_us / 1e6, tz=UTC)
        self.session = config.session or int(start_day.strftime("%Y%m%d"))
        self.total_events = _total_events(config)
        self._rng = np.random.default_rng(config.seed)
        self._sym = _Symbols(config, self._rng)
        n = len(self._sym)
        self._last_seq = np.zeros((2, n), dtype=np.int64)
        self._valid = np.zeros((2, n), dtype=np.int64)
        self._events = 0
        self._listed = False
        self._topic_of: dict[Stream, str] = {
            "trades": self.topics.trades,
            "quotes": self.topics.quotes,
            "reference": self.topics.reference,
        }
        self._produced: dict[str, int] = {"trades": 0, "quotes": 0, "reference": 0}
        self._gaps: list[Gap] = []
        self._dups: list[Duplicate] = []
        self._reorders: list[Reorder] = []
        self._poison: list[Poison] = []
        self._poison_by_kind: dict[str, int] = {}

    # -- iteration --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[Stream, bytes, bytes]]:
        for chunk in self.chunks():
            yield from chunk.messages

    def chunks(self) -> Iterator[SimChunk]:
        if not self._listed:
            self._listed = True
            yield self._listings()
        while self.total_events is None or self._events < self.total_events:
            n = _CHUNK if self.total_events is None else min(_CHUNK, self.total_events - self._events)
            gc_was_enabled = gc.isenabled()
            gc.disable()  # many short-lived structs; the cyclic GC would only slow this down
            try:
                chunk = self._market_chunk(n)
            finally:
                if gc_was_enabled:
                    gc.enable()
            yield chunk

    @property
    def symbols(self) -> list[str]:
        return list(self._sym.names)

    def event_time_s(self, index: np.ndarray) -> np.ndarray:
        """Seconds of event time after the start at which market events ``index`` happen."""
        return _event_time_s(self.config, index)

    # -- generation -------------------------------------------------------------------------

    def _listings(self) -> SimChunk:
        cfg = self.config
        listed_from = f"{self.session // 10_000:04d}-{self.session // 100 % 100:02d}-{self.session % 100:02d}"
        msgs: list[tuple[Stream, bytes, bytes]] = []
        for name, key, tier in zip(self._sym.names, self._sym.keys, self._sym.tier.tolist(), strict=True):
            ref = Reference(
                schema_version=SCHEMA_VERSION,
                exchange=cfg.exchange,
                symbol=name,
                session=self.session,
                seq=1,
                ts=self.start_ts_us,
                kind="listing",
                name=f"Simulated tier {tier} {name}",
                currency="USD",
                listed_from=listed_from,
            )
            msgs.append(("reference", key, encoder.encode(ref)))
        self._produced["reference"] += len(msgs)
        return SimChunk(msgs, np.full(len(msgs), -1, dtype=np.int64))

    def _market_chunk(self, n: int) -> SimChunk:
        cfg = self.config
        rng = self._rng
        sym_info = self._sym
        n_sym = len(sym_info)
        first_event = self._events

        # Every draw, every chunk, in a fixed order: the output depends only on config and seed.
        sym = np.minimum(np.searchsorted(sym_info.cdf, rng.random(n), side="right"), n_sym - 1)
        is_quote = rng.random(n) < cfg.quote_ratio
        u = rng.random(n)
        gap_len = rng.integers(1, _MAX_GAP + 1, size=n)
        dup_delay = rng.integers(1, _MAX_DUP_DELAY + 1, size=n)
        shock = rng.standard_normal(n)
        size_a = rng.standard_normal(n)
        size_b = rng.standard_normal(n)
        spread = rng.geometric(0.6, size=n)  # in ticks, >= 1
        skew = rng.random(n)

        fault = np.zeros(n, dtype=np.int8)
        edges = np.cumsum([cfg.gap_rate, cfg.duplicate_rate, cfg.reorder_rate, cfg.poison_rate])
        fault[u < edges[3]] = _POISON
        fault[u < edges[2]] = _REORDER
        fault[u < edges[1]] = _DUP
        fault[u < edges[0]] = _GAP

        stream = is_quote.astype(np.int64)
        key = stream * n_sym + sym
        rank, nxt, order = _group(key)
        prior = self._last_seq[stream, sym]  # last seq produced for this stream before the chunk

        # A stream's first event is seq 1: no gap before it, no reorder starting at it.
        fresh = (prior == 0) & (rank == 1)
        fault[fresh & ((fault == _GAP) | (fault == _REORDER))] = _NONE

        # Reorders: pair (i, j = next of i) swap; m = next of j is protected from gaps/reorders.
        protected = np.zeros(n, dtype=bool)
        pairs: list[tuple[int, int]] = []
        for i in np.flatnonzero(fault == _REORDER).tolist():
            j = int(nxt[i])
            m = int(nxt[j]) if j >= 0 else -1
            if protected[i] or j < 0 or m < 0 or fault[j] != _NONE or fault[m] in (_GAP, _REORDER):
                fault[i] = _NONE
                continue
            fault[j] = _REORDER
            protected[j] = protected[m] = True
            pairs.append((i, j))

        gaps = np.where(fault == _GAP, gap_len, 0)
        seq = prior + rank + _grouped_cumsum(gaps, order, key)

        # Prices: one mid per symbol (shared by its trades and quotes), log random walk.
        sym_order = np.argsort(sym, kind="stable")
        log_mid = sym_info.log_mid[sym] + _grouped_cumsum(shock * sym_info.sigma[sym], sym_order, sym)
        last_of_sym = np.full(n_sym, -1, dtype=np.int64)
        np.maximum.at(last_of_sym, sym, np.arange(n))  # each symbol's last event in the chunk
        seen = last_of_sym >= 0
        sym_info.log_mid[seen] = log_mid[last_of_sym[seen]]
        tick = sym_info.tick[sym]
        mid_ticks = np.exp(log_mid) / tick
        px_ticks = np.maximum(np.rint(mid_ticks), 1)
        bid_ticks = np.maximum(np.floor(mid_ticks - spread * skew), 1)
        ask_ticks = bid_ticks + spread
        dec = sym_info.decimals[sym]
        price = np.where(dec == 2, np.round(px_ticks * tick, 2), np.round(px_ticks * tick, 3))
        bid = np.where(dec == 2, np.round(bid_ticks * tick, 2), np.round(bid_ticks * tick, 3))
        ask = np.where(dec == 2, np.round(ask_ticks * tick, 2), np.round(ask_ticks * tick, 3))
        log_size = sym_info.log_size[sym]
        qty = np.maximum(np.exp(log_size + size_a), 1).astype(np.int64)
        bid_size = np.maximum(np.exp(log_size + 0.5 + size_a), 1).astype(np.int64)
        ask_size = np.maximum(np.exp(log_size + 0.5 + size_b), 1).astype(np.int64)
        ts = self.start_ts_us + np.rint(
            _event_time_s(cfg, np.arange(first_event, first_event + n)) * 1e6
        ).astype(np.int64)

        # Encode: one struct per event, straight to bytes.
        ex, sess, names, keys = cfg.exchange, self.session, sym_info.names, sym_info.keys
        t_idx = np.flatnonzero(~is_quote)
        q_idx = np.flatnonzero(is_quote)
        values = np.empty(n, dtype=object)
        enc = encoder.encode
        values[t_idx] = [
            enc(
                Trade(
                    schema_version=SCHEMA_VERSION,
                    exchange=ex,
                    symbol=names[s],
                    session=sess,
                    seq=q,
                    ts=t,
                    price=p,
                    qty=v,
                    conditions=[],
                    trade_id=f"{names[s]}-{sess}-{q}",
                )
            )
            for s, q, t, p, v in zip(
                sym[t_idx].tolist(),
                seq[t_idx].tolist(),
                ts[t_idx].tolist(),
                price[t_idx].tolist(),
                qty[t_idx].tolist(),
                strict=True,
            )
        ]
        values[q_idx] = [
            enc(
                Quote(
                    schema_version=SCHEMA_VERSION,
                    exchange=ex,
                    symbol=names[s],
                    session=sess,
                    seq=q,
                    ts=t,
                    bid=b,
                    ask=a,
                    bid_size=bs,
                    ask_size=az,
                )
            )
            for s, q, t, b, a, bs, az in zip(
                sym[q_idx].tolist(),
                seq[q_idx].tolist(),
                ts[q_idx].tolist(),
                bid[q_idx].tolist(),
                ask[q_idx].tolist(),
                bid_size[q_idx].tolist(),
                ask_size[q_idx].tolist(),
                strict=True,
            )
        ]

        # Order: events in index order, reorder pairs swapped, extras inserted after a position.
        position = np.arange(n)
        for i, j in pairs:
            position[i], position[j] = j, i
        out_event = np.empty(n, dtype=np.int64)
        out_event[position] = np.arange(n)  # out_event[p] = event produced at position p
        inserts: list[tuple[int, int, int, bytes]] = []  # (after position, tie-break, event, value)
        for i in np.flatnonzero(fault == _DUP).tolist():
            inserts.append((min(i + int(dup_delay[i]), n - 1), 1, i, values[i]))
        for i in np.flatnonzero(fault == _POISON).tolist():
            inserts.append((i, 0, i, self._new_poison(_STREAMS[stream[i]], values[i])))
        inserts.sort(key=lambda x: (x[0], x[1], x[2]))

        roles: list[Stream] = [_STREAMS[s] for s in stream[out_event].tolist()]
        sym_keys = [keys[s] for s in sym[out_event].tolist()]
        ordered = values[out_event].tolist()
        messages: list[tuple[Stream, bytes, bytes]] = []
        event_index: list[np.ndarray] = []
        prev = 0
        for after, _, i, value in inserts:
            messages.extend(
                zip(
                    roles[prev : after + 1],
                    sym_keys[prev : after + 1],
                    ordered[prev : after + 1],
                    strict=True,
                )
            )
            event_index.append(out_event[prev : after + 1])
            prev = after + 1
            messages.append((_STREAMS[stream[i]], keys[sym[i]], value))
            event_index.append(np.array([out_event[after]]))
        messages.extend(zip(roles[prev:], sym_keys[prev:], ordered[prev:], strict=True))
        event_index.append(out_event[prev:])

        self._account(n, stream, sym, seq, gaps, fault, pairs)
        self._events += n
        return SimChunk(messages, np.concatenate(event_index) + first_event)

    def _account(
        self,
        n: int,
        stream: np.ndarray,
        sym: np.ndarray,
        seq: np.ndarray,
        gaps: np.ndarray,
        fault: np.ndarray,
        pairs: list[tuple[int, int]],
    ) -> None:
        ex, sess, names = self.config.exchange, self.session, self._sym.names
        n_sym = len(names)
        np.add.at(self._valid, (stream, sym), 1)
        flat = stream * n_sym + sym
        last = np.zeros(2 * n_sym, dtype=np.int64)
        np.maximum.at(last, flat, seq)
        self._last_seq = np.maximum(self._last_seq, last.reshape(2, n_sym))
        for i in np.flatnonzero(gaps).tolist():
            self._gaps.append(
                Gap(
                    table=_STREAMS[stream[i]],
                    exchange=ex,
                    symbol=names[sym[i]],
                    session=sess,
                    first_seq=int(seq[i] - gaps[i]),
                    last_seq=int(seq[i] - 1),
                )
            )
        for i in np.flatnonzero(fault == _DUP).tolist():
            self._dups.append(
                Duplicate(
                    table=_STREAMS[stream[i]],
                    exchange=ex,
                    symbol=names[sym[i]],
                    session=sess,
                    seq=int(seq[i]),
                )
            )
        for i, j in pairs:
            self._reorders.append(
                Reorder(
                    table=_STREAMS[stream[i]],
                    exchange=ex,
                    symbol=names[sym[i]],
                    session=sess,
                    first_seq=int(seq[i]),
                    second_seq=int(seq[j]),
                )
            )
        n_trades = int(np.count_nonzero(stream == 0))
        n_dups = np.bincount(stream[fault == _DUP], minlength=2)
        self._produced["trades"] += n_trades + int(n_dups[0])
        self._produced["quotes"] += n - n_trades + int(n_dups[1])

    def _new_poison(self, table: Stream, valid: bytes) -> bytes:
        kind = POISON_KINDS[len(self._poison) % len(POISON_KINDS)]
        alternate = (len(self._poison) // len(POISON_KINDS)) % 2 == 1
        value = _make_poison(kind, table, valid, alternate)
        self._poison.append(Poison(topic=self._topic_of[table], table=table, kind=kind, bytes_len=len(value)))
        self._poison_by_kind[kind] = self._poison_by_kind.get(kind, 0) + 1
        self._produced[table] += 1
        return value

    # -- the ground truth -------------------------------------------------------------------

    @property
    def report(self) -> FeedReport:
        names = self._sym.names
        streams: list[StreamRange] = []
        gap_seqs: dict[tuple[str, str], int] = {}
        for g in self._gaps:
            k = (g.table, g.symbol)
            gap_seqs[k] = gap_seqs.get(k, 0) + g.last_seq - g.first_seq + 1
        counts: dict[str, int] = {"trades": 0, "quotes": 0, "reference": 0}
        symbols: dict[str, dict[str, int]] = {"trades": {}, "quotes": {}, "reference": {}}
        if self._listed:
            for name in names:
                streams.append(
                    StreamRange(
                        table="reference",
                        exchange=self.config.exchange,
                        symbol=name,
                        session=self.session,
                        first_seq=1,
                        last_seq=1,
                        count=1,
                    )
                )
                symbols["reference"][name] = 1
            counts["reference"] = len(names)
        for s, table in enumerate(_STREAMS):
            for idx in np.flatnonzero(self._last_seq[s]).tolist():
                last = int(self._last_seq[s, idx])
                count = int(self._valid[s, idx])
                assert count == last - gap_seqs.get((table, names[idx]), 0), "simulator accounting broke"
                streams.append(
                    StreamRange(
                        table=table,
                        exchange=self.config.exchange,
                        symbol=names[idx],
                        session=self.session,
                        first_seq=1,
                        last_seq=last,
                        count=count,
                    )
                )
                symbols[table][names[idx]] = count
                counts[table] += count
        return FeedReport(
            feed="simulator",
            exchange=self.config.exchange,
            produced_total=sum(self._produced.values()),
            produced=dict(self._produced),
            counts=counts,
            symbols=symbols,
            streams=streams,
            gaps=list(self._gaps),
            duplicates=list(self._dups),
            reorders=list(self._reorders),
            poison=list(self._poison),
            poison_by_kind=dict(self._poison_by_kind),
            params={
                **self.config.model_dump(),
                "resolved_start_ts_us": self.start_ts_us,
                "resolved_session": self.session,
                "market_events": self._events,
            },
        )


def _make_poison(kind: str, table: Stream, valid: bytes, alternate: bool) -> bytes:
    """A message breaking exactly the rule ``kind`` names, derived from the valid ``valid``."""
    if kind == "malformed":
        return valid[: len(valid) // 2]  # an unterminated object: not JSON
    d: dict[str, Any] = msgspec.json.decode(valid)
    trade = table == "trades"
    if kind == "missing_field":
        del d["price" if trade else "bid_size"]
    elif kind == "wrong_type":
        field = "price" if trade else "bid"
        d[field] = str(d[field])
    elif kind == "non_finite":
        field, token = ("price", b"NaN") if trade else ("ask", b"Infinity")
        del d[field]
        return encoder.encode(d)[:-1] + b',"' + field.encode() + b'":' + token + b"}"
    elif kind == "price_not_positive":
        if trade:
            d["price"] = -d["price"] if alternate else 0.0
        else:
            d["bid"] = -d["bid"]
    elif kind == "qty_not_positive":
        if trade:
            d["qty"] = -d["qty"] if alternate else 0
        else:
            d["bid_size"] = -d["bid_size"]
    elif kind == "future_ts":
        d["ts"] = d["ts"] + FUTURE_POISON_US
    elif kind == "unknown_exchange":
        d["exchange"] = UNKNOWN_EXCHANGE
    elif kind == "oversize":
        d["venue" if trade else "padding"] = "X" * OVERSIZE_BYTES
    else:  # pragma: no cover - POISON_KINDS is closed
        raise ValueError(kind)
    return encoder.encode(d)


def _event_time_s(cfg: SimulatorConfig, index: np.ndarray) -> np.ndarray:
    n = index.astype(np.float64)
    if cfg.rate <= 0:
        return n * (_UNPACED_EVENT_US / 1e6)
    r, k = cfg.rate, cfg.burst_multiplier
    b0, bd = cfg.burst_start_s, cfg.burst_seconds
    n0 = r * b0  # events before the burst
    nb = r * k * bd  # events during it
    return np.where(
        n < n0, n / r, np.where(n < n0 + nb, b0 + (n - n0) / (r * k), b0 + bd + (n - n0 - nb) / r)
    )


def _events_until(cfg: SimulatorConfig, t: float) -> int:
    """Market events whose event time is < ``t`` seconds (rate > 0)."""
    r, k = cfg.rate, cfg.burst_multiplier
    b0, b1 = cfg.burst_start_s, cfg.burst_start_s + cfg.burst_seconds
    in_burst = max(0.0, min(t, b1) - b0)
    return int(np.ceil(r * (t - in_burst) + r * k * in_burst))


def _total_events(cfg: SimulatorConfig) -> int | None:
    """Market events the run generates; None: unbounded (stopped by wall time or by the caller)."""
    total = cfg.messages
    if cfg.duration_s is not None and cfg.rate > 0:
        by_time = _events_until(cfg, cfg.duration_s)
        total = by_time if total is None else min(total, by_time)
    return total


def generate(config: SimulatorConfig, topics: TopicNames | None = None) -> Simulation:
    """The run ``config`` describes, without Kafka: iterate for ``(stream, key, value)``, then read
    ``.report``. Unbounded (iterate with care) when ``messages`` is None and ``rate`` is 0."""
    return Simulation(config, topics)


def simulate(
    settings: Settings,
    config: SimulatorConfig,
    report_path: Path | str | None = None,
    progress: bool = True,
    prerender: bool = False,
) -> FeedReport:
    """Produce a simulator run to the trades/quotes/reference topics; returns the exact report.

    Stops after ``config.messages`` market events, or (``rate == 0``) at the first chunk boundary
    after ``duration_s`` of wall time, so the report always covers whole chunks.

    ``prerender`` (bounded, unpaced runs only) generates every message before the first is sent,
    so the clock (``started_at``) measures Kafka, not the generator: benchmarks use it to keep
    the load generator's own CPU out of a machine the pipeline under test shares.
    """
    sim = Simulation(config, settings.kafka.topics)
    topics = settings.kafka.topics
    topic_of: dict[Stream, str] = {
        "trades": topics.trades,
        "quotes": topics.quotes,
        "reference": topics.reference,
    }
    batches: Iterable[tuple[SimChunk, list[tuple[str, bytes, bytes]]]] = (
        (chunk, [(topic_of[role], key, value) for role, key, value in chunk.messages])
        for chunk in sim.chunks()
    )
    if prerender:
        if config.rate > 0 or config.messages is None or config.duration_s is not None:
            raise ValueError("prerender needs a bounded (messages=N), unpaced (rate=0), untimed run")
        batches = list(batches)
    total = None
    if sim.total_events is not None:
        extra = 1.0 + config.duplicate_rate + config.poison_rate  # an estimate: faults are random
        total = int(sim.total_events * extra) + len(sim.symbols)
    bar = FeedProgress("simulator", total) if progress else None
    with FeedProducer(settings.kafka) as producer:
        producer.connect(topic_of.values())
        started = time.time()
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        try:
            for chunk, wire in batches:
                if config.rate <= 0:
                    producer.send_many(wire)
                else:
                    due = sim.event_time_s(np.maximum(chunk.event_index, 0))
                    send_paced(producer, wire, due.tolist(), t0)
                if bar is not None:
                    bar.advance(len(wire))
                if (
                    config.rate <= 0
                    and config.duration_s is not None
                    and time.perf_counter() - t0 >= config.duration_s
                ):
                    break
        finally:
            if bar is not None:
                bar.stop()
        producer.flush()
        elapsed = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
    report = sim.report
    report.started_at = utc_iso(started)
    report.ended_at = utc_iso(started + elapsed)
    report.elapsed_s = round(elapsed, 6)
    report.cpu_s = round(cpu_s, 3)
    report.messages_per_second = round(report.produced_total / elapsed, 1) if elapsed > 0 else 0.0
    if report_path is not None:
        report.write(report_path)
    return report
