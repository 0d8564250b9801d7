"""Fixtures for tests against the real local Kafka broker and a real Iceberg catalog.

One broker serves the whole session, on ports 19092/19093 so it never meets a developer's own
broker on 9092, with its data in a session temp dir and its jars in the normal cache. Each test
gets its own topics and consumer group through ``k2_settings``, so tests share the broker but
never each other's messages or offsets.

Nothing here skips: without java or mvn the broker fixture fails, and so do the tests.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2.broker import LocalBroker, delete_topics, ensure_k2_topics
from k2.config import BrokerSettings, IcebergSettings, IngestSettings, KafkaSettings, Settings, TopicNames
from k2.errors import BrokerError

# K2_TEST_BROKER_PORT lets two checkouts (or two engineers) run integration tests side by side.
BROKER_PORT = int(os.environ.get("K2_TEST_BROKER_PORT", "19092"))
CONTROLLER_PORT = BROKER_PORT + 1
PARTITIONS = 6

_HERE = Path(__file__).parent
_test_numbers = itertools.count()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by folder (``integration``, ``faults``) so ``-m "not integration"`` stays fast."""
    for item in items:
        for folder in ("integration", "faults"):
            if item.path.is_relative_to(_HERE / folder):
                item.add_marker(getattr(pytest.mark, folder))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """The session's running broker; stopped and its state deleted when the session ends."""
    settings = BrokerSettings(
        port=BROKER_PORT,
        controller_port=CONTROLLER_PORT,
        state_dir=tmp_path_factory.mktemp("broker"),
    )
    local = LocalBroker(settings, KafkaSettings(partitions=PARTITIONS))
    local.start()
    yield local
    local.wipe()


@pytest.fixture
def k2_settings(broker: LocalBroker, tmp_path: Path) -> Iterator[Settings]:
    """Settings for one test: its own topics (created, 6 partitions), group and warehouse.

    The broker is (re)started first, so a fault test that killed it does not fail the next test.
    """
    broker.start()
    n = next(_test_numbers)
    topics = TopicNames(
        trades=f"t{n}-trades", quotes=f"t{n}-quotes", reference=f"t{n}-reference", dlq=f"t{n}-dlq"
    )
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    settings = Settings(
        kafka=KafkaSettings(
            bootstrap_servers=broker.bootstrap,
            topics=topics,
            partitions=PARTITIONS,
            group_id=f"t{n}-k2-ingest",
        ),
        broker=broker.settings,
        iceberg=IcebergSettings(type="sql", warehouse=str(warehouse)),
        ingest=IngestSettings(status_dir=tmp_path / "status"),
    )
    ensure_k2_topics(broker.bootstrap, topics, PARTITIONS)
    yield settings
    _drop_topics(broker, topics.all())


def _drop_topics(broker: LocalBroker, names: list[str]) -> None:
    """Keep the session broker small; a test that left the broker down must not fail here."""
    if not broker.status().running:
        warnings.warn(f"broker not running at teardown; topics {names} left in place", stacklevel=1)
        return
    try:
        delete_topics(broker.bootstrap, names, timeout=15)
    except BrokerError as exc:
        warnings.warn(f"could not delete test topics {names}: {exc}", stacklevel=1)
