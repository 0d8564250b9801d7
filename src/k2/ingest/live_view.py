"""What an ingest process tells the API about one table's live buffer (served by ``live_server``).

Taken under the ingest lock, so the chunks and the per-partition offsets describe one moment:
``floor`` is the partition's stored offset (every offset below is visible in Iceberg: the
committer updates it only after the commit landed, and releases the rows after that), and
``consumed`` the next offset after the last buffered row. Rows ``[floor, consumed)`` are all in
the chunks (shed messages excepted, which the deferred ledger names), whatever a commit is doing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from k2.lake.tables import market_arrow_schema
from k2.live_buffer import LiveBuffer
from k2.live_protocol import LiveView, PartitionLive
from k2.wire import Stream

__all__ = ["live_view"]


def live_view(
    table: str,
    stream: Stream,
    positions: Mapping[int, tuple[int | None, int | None]],
    buffer: LiveBuffer,
    process: dict[str, Any],
) -> LiveView:
    """``positions``: partition -> (stored offset or None, consumed position or None)."""
    partitions = {}
    for p, (stored, consumed) in positions.items():
        floor = stored or 0
        partitions[p] = PartitionLive(
            floor=floor, consumed=max(floor, consumed if consumed is not None else floor)
        )
    return LiveView(market_arrow_schema(stream), buffer.read(table), partitions, process)
