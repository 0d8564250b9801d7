"""k2 ingest: Kafka batches -> decode/validate -> sequencing + dedup -> live buffer -> Iceberg."""

from k2.ingest.app import IngestApp, IngestReport

__all__ = ["IngestApp", "IngestReport"]
