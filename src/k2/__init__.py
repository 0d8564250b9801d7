"""k2: market data from Kafka into Apache Iceberg, exactly once."""

__version__ = "0.1.0"
