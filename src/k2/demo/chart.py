"""PNG charts of what the demo measured (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from datetime import datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["bars_chart"]


def bars_chart(
    bars: list[dict[str, Any]],
    title: str,
    tz: str,
    path: Path,
    continuous: tuple[time, time] = (time(10, 0), time(16, 0)),
) -> Path:
    """Price (high-low range and close of each bar) over volume, local exchange time on the x axis.

    ``bars`` are rows of ``GET /v1/bars`` (``bar_start`` ISO UTC, ``high``/``low``/``close``,
    ``volume``). ``continuous``: the exchange's continuous trading hours, local time.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    zone = ZoneInfo(tz)
    t = [datetime.fromisoformat(b["bar_start"]).astimezone(zone).replace(tzinfo=None) for b in bars]
    # Auction and off-market prints outside continuous trading would squash the day's line: they
    # are drawn as dots, and the price axis fits the continuous session.
    inside = [i for i, x in enumerate(t) if continuous[0] <= x.time() < continuous[1]]
    outside = [i for i in range(len(t)) if i not in set(inside)]
    fig, (price, volume) = plt.subplots(
        2, 1, figsize=(11, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    try:
        price.vlines(
            [t[i] for i in inside],
            [bars[i]["low"] for i in inside],
            [bars[i]["high"] for i in inside],
            color="#9bb7d4",
            linewidth=2,
            label="1-minute high-low",
        )
        price.plot(
            [t[i] for i in inside],
            [bars[i]["close"] for i in inside],
            color="#1f4e79",
            linewidth=1,
            label="close (1-MINUTE-LAST)",
        )
        lo, hi = None, None
        if inside:
            lo = min(bars[i]["low"] for i in inside)
            hi = max(bars[i]["high"] for i in inside)
            pad = (hi - lo) * 0.15 or 0.1
            lo, hi = lo - pad, hi + pad
            price.set_ylim(lo, hi)
        if outside:
            off = sum(
                1 for i in outside if lo is not None and hi is not None and not lo <= bars[i]["close"] <= hi
            )
            price.plot(
                [t[i] for i in outside],
                [bars[i]["close"] for i in outside],
                "o",
                color="#c55a11",
                markersize=3,
                label=f"close outside continuous trading ({len(outside)} bars, {off} off the scale)",
            )
        price.set_ylabel("price")
        price.set_title(title)
        price.legend(loc="best")
        price.grid(alpha=0.3)
        volume.bar(t, [b["volume"] for b in bars], width=1 / (24 * 60), color="#7f7f7f")
        volume.set_ylabel("volume")
        volume.grid(alpha=0.3)
        volume.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        volume.set_xlabel(f"exchange-local time ({tz})")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path
