"""k2's one typed settings object.

Built once at the edge (CLI start, test fixture) from ``config/k2.toml`` and ``K2_*`` environment
variables, then passed down. No module reads the environment on its own, so a test can build a
``Settings`` with a different port or warehouse and run two k2 worlds side by side.

Precedence, highest first: constructor arguments, ``K2_*`` environment variables (nested with
``__``, e.g. ``K2_KAFKA__BOOTSTRAP_SERVERS``), the TOML file, the defaults below.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

__all__ = [
    "ApiSettings",
    "BrokerSettings",
    "DegradationSettings",
    "FeedSettings",
    "IcebergSettings",
    "IngestSettings",
    "KafkaSettings",
    "LiveSettings",
    "LogSettings",
    "Settings",
    "SheddingSettings",
    "load_settings",
    "settings_env",
]

DEFAULT_CONFIG_FILE = Path("config/k2.toml")


class _Section(BaseModel):
    # A misspelt key must be an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class TopicNames(_Section):
    """Kafka topic per stream. The table a topic lands in is fixed by its role, not its name."""

    trades: str = "trades"
    quotes: str = "quotes"
    reference: str = "reference"
    dlq: str = "dlq"

    def data_topics(self) -> list[str]:
        return [self.trades, self.quotes, self.reference]

    def all(self) -> list[str]:
        return [*self.data_topics(), self.dlq]


class KafkaSettings(_Section):
    """Where the feeds produce and ingest consumes; ``client_properties`` go to librdkafka verbatim."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topics: TopicNames = Field(default_factory=TopicNames)
    partitions: int = Field(default=6, ge=1)
    group_id: str = "k2-ingest"
    # librdkafka properties passed through verbatim to producers and consumers.
    client_properties: dict[str, str | int | bool] = Field(default_factory=dict)


class BrokerSettings(_Section):
    """The local single-node Apache Kafka (KRaft) that ``k2 broker`` manages."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    kafka_version: str = "4.1.1"
    scala_version: str = "2.13"
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    # Jars live outside the repo so a fresh clone reuses them; the broker's data and pid do not.
    cache_dir: Path = Path("~/.cache/k2")
    state_dir: Path = Path(".k2/broker")
    heap: str = "1G"
    start_timeout_s: float = 60.0

    @field_validator("cache_dir", "state_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(os.path.expanduser(str(v)))


class IcebergSettings(_Section):
    """Catalog choice is configuration only: the same code writes to SQLite+files or REST+S3."""

    catalog_name: str = "k2"
    type: Literal["sql", "rest"] = "sql"
    # sql: a SQLAlchemy URI; empty means SQLite at <warehouse>/catalog.db
    uri: str = ""
    warehouse: str = ".k2/warehouse"
    namespace: str = "market"
    # Extra pyiceberg catalog properties (s3.endpoint, credentials, token, ...).
    properties: dict[str, str] = Field(default_factory=dict)
    target_row_group_rows: int = 100_000
    # Maintenance: keep the table fast for days of commits.
    # Snapshots are the time-travel window; each one kept also makes every commit slower.
    expire_snapshots_older_than_s: float = 600.0
    keep_min_snapshots: int = 10
    # Expiring often keeps few snapshots in the metadata pyiceberg deep-copies on every commit:
    # steady-state append latency 30 ms vs 36-48 ms with 20 (k2 bench ingest, 1,000 commits).
    maintenance_every_commits: int = Field(default=5, ge=1)
    manifest_merge_min_count: int = 50  # 0 turns manifest merging off


class IngestSettings(_Section):
    """Batching, commit cadence, validation rules and the bounds of sequencing state."""

    consume_batch: int = Field(default=50_000, ge=1)
    # Longest wait for a batch to fill. ``consume`` returns when it holds ``consume_batch`` messages
    # or after this long, so a long wait stalls the tail of every burst (the last, partial batch
    # of a replay waited 0.5 s here, a fifth of the whole ASX run). Under load batches still fill.
    consume_timeout_s: float = Field(default=0.05, gt=0)
    flush_rows: int = Field(default=500_000, ge=1)
    flush_seconds: float = Field(default=15.0, gt=0)
    # Consumption pauses (per partition) while this many rows wait for the committer.
    max_buffered_rows: int = 2_000_000
    max_message_bytes: int = 16_384
    future_tolerance_s: float = 300.0
    known_exchanges: list[str] = Field(default_factory=lambda: ["ASX", "SIM"])
    supported_schema_versions: list[int] = Field(default_factory=lambda: [1])
    dedup_max_streams: int = 100_000
    dedup_max_age_s: float = 7 * 24 * 3600.0
    tracker_max_open_gaps: int = 10_000
    # An open gap older than this is declared lost; a later arrival for it goes to the DLQ.
    gap_lost_after_s: float = 24 * 3600.0
    writer_id: str = ""
    # Ingest processes on this host, in one consumer group (``k2 ingest --processes``). One
    # Python process is bounded by one core for consume + decode; Kafka splits the partitions.
    processes: int = Field(default=1, ge=1, le=64)
    # Each process rewrites its status here about every second (``k2 status`` reads them).
    status_dir: Path = Path(".k2/status")
    # Each process serves Prometheus metrics at http://metrics_host:metrics_port/metrics and writes
    # that address in its status file. Port 0: any free port (each of ``processes`` gets its own).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # The report keeps the newest this many freshness samples (32 a batch at most; benchmarks
    # that want a whole long run raise it).
    freshness_samples: int = Field(default=50_000, ge=0)
    # Benchmarks and tests only: every commit waits this long first (slow storage, simulated).
    debug_commit_delay_s: float = Field(default=0.0, ge=0.0)


def _strictly_increasing(name: str, values: list[int] | list[float]) -> None:
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(f"{name} must be strictly increasing (SOFT < GRACEFUL < AGGRESSIVE < CIRCUIT_BREAK)")


class DegradationSettings(_Section):
    """When ingest falls behind, which freshness level it degrades to, and how it recovers.

    Each list holds the bound that enters SOFT, GRACEFUL, AGGRESSIVE and CIRCUIT_BREAK, in that
    order. Lag is messages behind the high watermarks of the partitions a process owns; memory is
    the process's RSS as a fraction of ``memory_budget_bytes``. Escalation is immediate; recovery
    steps down one level after both signals stayed below (the current level's bound x recovery
    factor) for ``cooldown_s``, so a load that oscillates around a bound does not flap.
    """

    # False keeps every process at NORMAL: nothing is shed (the benchmark compares on and off).
    enabled: bool = True
    lag_thresholds: list[int] = Field(
        default_factory=lambda: [100_000, 500_000, 1_000_000, 5_000_000], min_length=4, max_length=4
    )
    memory_thresholds: list[float] = Field(
        default_factory=lambda: [0.70, 0.80, 0.90, 0.95], min_length=4, max_length=4
    )
    # Recovery bounds sit well below the entry bounds: lag must halve, memory drop by a tenth.
    lag_recovery_factor: float = Field(default=0.5, gt=0.0, le=1.0)
    memory_recovery_factor: float = Field(default=0.9, gt=0.0, le=1.0)
    cooldown_s: float = Field(default=30.0, ge=0.0)
    # At AGGRESSIVE and up, a lag past the AGGRESSIVE bound is deferred whole: the consumer jumps
    # to the head and the skipped offsets go to the deferred ledger for backfill.
    defer_backlog: bool = True
    # 0 = auto: the cgroup memory limit if there is one, else the machine's memory
    # (``k2.degradation.memory_budget``). Set it when several processes share one limit.
    memory_budget_bytes: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> DegradationSettings:
        if self.lag_thresholds[0] <= 0 or self.memory_thresholds[0] <= 0:
            raise ValueError("degradation thresholds must be positive")
        _strictly_increasing("lag_thresholds", self.lag_thresholds)
        _strictly_increasing("memory_thresholds", self.memory_thresholds)
        return self


class SheddingSettings(_Section):
    """Which symbols are kept fresh under load: tier files name tier-1 and tier-2 symbols per exchange.

    A path may be a TOML file or a directory (every ``*.toml`` in it). Symbols in no file are
    tier 3; a symbol listed twice takes its lowest (most important) tier.
    """

    # False never sheds, whatever the degradation level.
    enabled: bool = True
    tier_files: list[Path] = Field(default_factory=lambda: [Path("config/tiers")])


class FeedSettings(_Section):
    """Inputs of ``k2 feed replay``."""

    asx_data_dir: Path = Path("data/asx-2014-03")
    asx_timezone: str = "Australia/Sydney"


class LogSettings(_Section):
    """structlog output: JSON lines, or colour when stderr is a terminal."""

    level: str = "INFO"
    # auto: JSON unless stdout is a terminal.
    format: Literal["auto", "json", "console"] = "auto"


class LiveSettings(_Section):
    """How ingest serves its live buffer (Arrow Flight) and how the API finds and calls it.

    Each ingest process listens on ``host`` (port 0: any free port) and advertises the address it
    got in its status file (``ingest.status_dir``); the API on the same host finds every process
    there. Processes on other hosts are named in ``endpoints`` (``grpc://host:port``).
    """

    enabled: bool = True
    host: str = "127.0.0.1"
    # 0: a free port per process (needed with ``ingest.processes`` > 1 on one host).
    port: int = Field(default=0, ge=0, le=65535)
    # Extra endpoints the API always asks, e.g. ingest processes on other hosts.
    endpoints: list[str] = Field(default_factory=list)
    # Per call; a live endpoint that does not answer in time counts as a failure.
    timeout_s: float = Field(default=1.0, gt=0)
    # pybreaker: this many failures in a row open an endpoint's breaker for reset_s.
    breaker_failures: int = Field(default=3, ge=1)
    breaker_reset_s: float = Field(default=10.0, gt=0)
    # A status file older than this is a process that stopped without cleaning up: not asked.
    stale_after_s: float = Field(default=15.0, gt=0)


class ApiSettings(_Section):
    """``k2 api``: the gateway process (REST + sandboxed SQL over history ∪ live)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Empty: no key needed (local use). Otherwise every /v1 request needs X-API-Key from this list.
    api_keys: list[str] = Field(default_factory=list)
    rate_limit_per_s: float = Field(default=50.0, gt=0)  # per key (or per client address)
    rate_limit_burst: int = Field(default=100, ge=1)
    max_body_bytes: int = Field(default=65_536, ge=1)
    max_sql_chars: int = Field(default=10_000, ge=1)
    max_rows: int = Field(default=100_000, ge=1)  # per response; more sets ``truncated``
    default_limit: int = Field(default=1_000, ge=1)
    sql_timeout_s: float = Field(default=10.0, gt=0)
    duckdb_memory_limit: str = "1GB"
    duckdb_threads: int = Field(default=2, ge=1)
    cors_origins: list[str] = Field(default_factory=list)
    # Decoded history files kept in memory (LRU); the hot days of history should fit.
    history_cache_bytes: int = Field(default=2_000_000_000, ge=1_000_000)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="K2_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    iceberg: IcebergSettings = Field(default_factory=IcebergSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    degradation: DegradationSettings = Field(default_factory=DegradationSettings)
    shedding: SheddingSettings = Field(default_factory=SheddingSettings)
    feeds: FeedSettings = Field(default_factory=FeedSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    live: LiveSettings = Field(default_factory=LiveSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if settings_cls.model_config.get("toml_file"):
            sources.append(TomlConfigSettingsSource(settings_cls))
        return tuple(sources)


def settings_env(settings: Settings) -> dict[str, str]:
    """``K2_*`` variables that rebuild exactly ``settings`` in a child process (benchmarks, fault tests)."""
    env: dict[str, str] = {}
    for section, values in settings.model_dump(mode="json").items():
        for key, value in values.items():
            name = f"K2_{section.upper()}__{key.upper()}"
            env[name] = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return env


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from a TOML file (default ``config/k2.toml`` if it exists) plus environment.

    ``overrides`` are section dicts, e.g. ``load_settings(kafka={"bootstrap_servers": "x:1"})``.
    """
    path = config_file if config_file is not None else DEFAULT_CONFIG_FILE
    if config_file is not None and not path.exists():
        from k2.errors import ConfigError

        raise ConfigError(f"config file not found: {path}")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(toml_file=path if path.exists() else None)

    loaded = _FromFile(**overrides)
    return Settings.model_validate(loaded.model_dump())
