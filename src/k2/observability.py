"""k2's Prometheus metrics: the one place they are defined.

Every component that counts something takes a ``Metrics`` from here instead of registering its
own collectors, so the full list of names, labels and buckets is in one file and a scrape of any
k2 process reads the same vocabulary. Ingest metrics will join the API's here.

Each ``Metrics`` owns its ``CollectorRegistry`` (never the process-global default), so tests and
several apps in one process can each build one without "Duplicated timeseries" errors.

Label values stay bounded: routes are templates (``/v1/trades``, not the raw path with its query),
SQL rejections are the ``QueryRejected.reason`` labels, errors the exception class name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Query latencies: a snapshot lookup answers in milliseconds, a full-day SQL scan in seconds.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """All of k2's collectors, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.api_requests = Counter(
            "k2_api_requests_total",
            "HTTP requests answered by the API, by route template and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        self.api_request_duration = Histogram(
            "k2_api_request_duration_seconds",
            "Time from request to the end of the response, by route template.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.api_sql_rejected = Counter(
            "k2_api_sql_rejected_total",
            "SQL statements refused before running, by reason (too_long, not_select, ...).",
            ["reason"],
            registry=self.registry,
        )
        self.api_errors = Counter(
            "k2_api_errors_total",
            "Unexpected exceptions the API answered with 500, by exception class.",
            ["exception"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The registry in Prometheus text format (serve with ``CONTENT_TYPE``)."""
        return generate_latest(self.registry)
