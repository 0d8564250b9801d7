"""The local broker as a developer uses it: start once, find it again, produce and consume."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest
from confluent_kafka import Consumer, Message, Producer
from confluent_kafka.admin import AdminClient

from k2.broker import LocalBroker, delete_topics, ensure_topics
from k2.config import Settings
from k2.errors import BrokerError


def _produce(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0, "message not delivered within 10s"


def _consume_one(bootstrap: str, topic: str, timeout: float = 20) -> Message:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                return message
        raise AssertionError(f"no message from {topic} within {timeout}s")
    finally:
        consumer.close()


def test_start_is_idempotent_and_keeps_the_same_process(broker: LocalBroker) -> None:
    first = broker.start()
    second = broker.start()
    assert first.running and second.running
    assert second.pid == first.pid


def test_another_process_sees_the_running_broker_instead_of_starting_one(broker: LocalBroker) -> None:
    script = (
        "import json, sys\n"
        "from k2.broker import LocalBroker\n"
        "from k2.config import BrokerSettings, KafkaSettings\n"
        "b = LocalBroker(BrokerSettings.model_validate_json(sys.argv[1]), KafkaSettings(partitions=6))\n"
        "before = b.status()\n"
        "after = b.start()\n"
        "print(json.dumps([before.running, before.pid, after.pid]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, broker.settings.model_dump_json()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    running, pid_before, pid_after = json.loads(done.stdout.strip().splitlines()[-1])
    assert running is True
    assert pid_before == pid_after == broker.status().pid


def test_status_reports_the_running_broker_and_its_topics(broker: LocalBroker, k2_settings: Settings) -> None:
    status = broker.status()
    assert status.running
    assert status.pid is not None
    assert status.bootstrap == "127.0.0.1:19092"
    assert set(k2_settings.kafka.topics.all()) <= set(status.topics)


def test_test_topics_exist_with_six_partitions(k2_settings: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": k2_settings.kafka.bootstrap_servers})
    metadata = admin.list_topics(timeout=10)
    for name in k2_settings.kafka.topics.all():
        assert len(metadata.topics[name].partitions) == 6, name


def test_message_round_trips_through_the_broker(k2_settings: Settings) -> None:
    bootstrap, topic = k2_settings.kafka.bootstrap_servers, k2_settings.kafka.topics.trades
    _produce(bootstrap, topic, key=b"BHP", value=b'{"sym":"BHP","price":36.12}')

    message = _consume_one(bootstrap, topic)

    assert message.key() == b"BHP"
    assert message.value() == b'{"sym":"BHP","price":36.12}'
    assert message.offset() == 0


def test_ensure_topics_again_is_harmless(k2_settings: Settings) -> None:
    ensure_topics(k2_settings.kafka.bootstrap_servers, k2_settings.kafka.topics.all(), 6)


def test_ensure_topics_refuses_a_different_partition_count(k2_settings: Settings) -> None:
    with pytest.raises(BrokerError, match="exists with 6 partitions, expected 3"):
        ensure_topics(k2_settings.kafka.bootstrap_servers, [k2_settings.kafka.topics.trades], 3)


def test_auto_creation_is_off_so_a_misspelt_topic_fails(k2_settings: Settings) -> None:
    producer = Producer(
        {"bootstrap.servers": k2_settings.kafka.bootstrap_servers, "message.timeout.ms": 3000}
    )
    errors: list[object] = []
    producer.produce("no-such-topic-trades", value=b"x", on_delivery=lambda err, _msg: errors.append(err))
    producer.flush(10)
    assert errors and errors[0] is not None
    admin = AdminClient({"bootstrap.servers": k2_settings.kafka.bootstrap_servers})
    assert "no-such-topic-trades" not in admin.list_topics(timeout=10).topics


def test_deleted_topics_disappear(k2_settings: Settings) -> None:
    bootstrap = k2_settings.kafka.bootstrap_servers
    ensure_topics(bootstrap, ["scratch-to-delete"], 2)
    delete_topics(bootstrap, ["scratch-to-delete"])
    assert (
        "scratch-to-delete"
        not in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
    )


def test_messages_survive_a_broker_restart(broker: LocalBroker, k2_settings: Settings) -> None:
    bootstrap, topic = k2_settings.kafka.bootstrap_servers, k2_settings.kafka.topics.quotes
    _produce(bootstrap, topic, key=b"CBA", value=b"before-restart")
    old_pid = broker.status().pid

    broker.stop()
    stopped = broker.status()
    restarted = broker.start()

    assert not stopped.running and stopped.pid is None
    assert restarted.running and restarted.pid != old_pid
    assert _consume_one(bootstrap, topic).value() == b"before-restart"
