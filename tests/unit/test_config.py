"""Settings: defaults, the TOML file, K2_* environment overrides, and the child-process round trip."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from k2.config import (
    IcebergSettings,
    IngestSettings,
    KafkaSettings,
    LogSettings,
    Settings,
    TopicNames,
    load_settings,
    settings_env,
)
from k2.errors import ConfigError

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "k2.toml"


@pytest.fixture(autouse=True)
def _no_k2_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts with no K2_* variables and in a folder without config/k2.toml."""
    for name in list(os.environ):
        if name.startswith("K2_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "k2.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment() -> None:
    s = load_settings()

    assert s == Settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka.topics.data_topics() == ["trades", "quotes", "reference"]
    assert s.kafka.topics.all() == ["trades", "quotes", "reference", "dlq"]
    assert s.iceberg.type == "sql" and s.iceberg.namespace == "market"
    assert s.ingest.known_exchanges == ["ASX", "SIM"]
    assert s.ingest.supported_schema_versions == [1]
    assert s.ingest.max_message_bytes == 16_384


def test_broker_cache_dir_tilde_is_expanded_by_default() -> None:
    s = Settings()

    assert "~" not in str(s.broker.cache_dir)
    assert s.broker.cache_dir == Path("~/.cache/k2").expanduser()


def test_toml_file_sets_values_and_leaves_the_rest_at_defaults(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        """
[kafka]
bootstrap_servers = "kafka-1:9092,kafka-2:9092"
partitions = 12

[kafka.topics]
trades = "asx.trades"

[ingest]
flush_rows = 1000
known_exchanges = ["ASX"]

[log]
level = "DEBUG"
""",
    )

    s = load_settings(path)

    assert s.kafka.bootstrap_servers == "kafka-1:9092,kafka-2:9092"
    assert s.kafka.partitions == 12
    assert s.kafka.topics == TopicNames(trades="asx.trades")
    assert s.ingest.flush_rows == 1000
    assert s.ingest.known_exchanges == ["ASX"]
    assert s.log.level == "DEBUG"
    assert s.iceberg == IcebergSettings()


def test_default_config_file_is_read_from_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "k2.toml").write_text('[kafka]\ngroup_id = "from-default-file"\n')

    assert load_settings().kafka.group_id == "from-default-file"


def test_environment_beats_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_toml(
        tmp_path,
        """
[kafka]
bootstrap_servers = "file:9092"

[kafka.topics]
trades = "file-trades"
quotes = "file-quotes"

[ingest]
known_exchanges = ["ASX", "SIM"]
flush_rows = 1000
""",
    )
    monkeypatch.setenv("K2_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("K2_KAFKA__TOPICS__TRADES", "env-trades")
    monkeypatch.setenv("K2_INGEST__KNOWN_EXCHANGES", '["ASX"]')

    s = load_settings(path)

    assert s.kafka.bootstrap_servers == "env:9092"
    assert s.kafka.topics.trades == "env-trades"
    assert s.kafka.topics.quotes == "file-quotes"  # a nested override replaces one key, not the table
    assert s.ingest.known_exchanges == ["ASX"]
    assert s.ingest.flush_rows == 1000


def test_overrides_beat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K2_KAFKA__GROUP_ID", "env-group")

    s = load_settings(kafka={"group_id": "arg-group"})

    assert s.kafka.group_id == "arg-group"


def test_missing_explicit_config_file_raises_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_settings(missing)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("[kafak]\nbootstrap_servers = 'x:1'\n", id="section"),
        pytest.param("debug = true\n", id="key"),
    ],
)
def test_unknown_top_level_key_in_file_is_rejected(tmp_path: Path, text: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        load_settings(write_toml(tmp_path, text))


@pytest.mark.parametrize("source", ["file", "env"])
def test_unknown_key_inside_a_section_is_rejected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    path = write_toml(tmp_path, "[ingest]\nflush_row = 5\n" if source == "file" else "")
    if source == "env":
        monkeypatch.setenv("K2_INGEST__FLUSH_ROW", "5")

    with pytest.raises(pydantic.ValidationError, match="flush_row"):
        load_settings(path)


def test_out_of_range_value_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="flush_rows"):
        load_settings(write_toml(tmp_path, "[ingest]\nflush_rows = 0\n"))


def test_repo_config_file_loads() -> None:
    s = load_settings(REPO_CONFIG)

    assert s.kafka.topics.all() == ["trades", "quotes", "reference", "dlq"]
    assert s.iceberg.type == "sql"
    assert s.ingest.known_exchanges == ["ASX", "SIM"]
    assert "~" not in str(s.broker.cache_dir)


def _apply(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_settings_env_round_trips_a_customised_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    original = Settings(
        kafka=KafkaSettings(
            bootstrap_servers="127.0.0.1:19092",
            topics=TopicNames(trades="t7-trades", quotes="t7-quotes", reference="t7-ref", dlq="t7-dlq"),
            partitions=3,
            client_properties={"linger.ms": 5, "enable.idempotence": True, "compression.type": "zstd"},
        ),
        iceberg=IcebergSettings(warehouse=str(tmp_path / "wh"), properties={"s3.endpoint": "http://x:9000"}),
        ingest=IngestSettings(flush_rows=1234, flush_seconds=0.25, known_exchanges=["SIM"], writer_id="w-1"),
        log=LogSettings(level="DEBUG", format="json"),
    )
    # A file saying otherwise must not matter: the environment rebuilds exactly ``original``.
    path = write_toml(tmp_path, "[kafka]\npartitions = 9\n[ingest]\nflush_rows = 1\n")

    _apply(monkeypatch, settings_env(original))

    assert load_settings(path) == original


_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)


@settings(max_examples=40, deadline=None)
@given(
    group_id=_text,
    writer_id=_text,
    exchanges=st.lists(_text, max_size=3),
    client_properties=st.dictionaries(_text, _text | st.integers(-9, 9) | st.booleans(), max_size=3),
    flush_seconds=st.floats(min_value=1e-3, max_value=1e6),
)
def test_settings_env_round_trips_any_text_and_numbers(
    group_id: str,
    writer_id: str,
    exchanges: list[str],
    client_properties: dict[str, str | int | bool],
    flush_seconds: float,
) -> None:
    original = Settings(
        kafka=KafkaSettings(group_id=group_id, client_properties=client_properties),
        ingest=IngestSettings(writer_id=writer_id, known_exchanges=exchanges, flush_seconds=flush_seconds),
    )

    with pytest.MonkeyPatch.context() as mp:
        _apply(mp, settings_env(original))
        rebuilt = load_settings()

    assert rebuilt == original
