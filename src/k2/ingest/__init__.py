"""k2 ingest: Kafka batches -> decode/validate -> sequencing + dedup -> live buffer -> Iceberg."""

from k2.ingest.app import IngestApp
from k2.ingest.report import IngestReport

__all__ = ["IngestApp", "IngestReport"]
