"""The rendered server.properties: what makes a one-node KRaft broker behave for k2."""

from __future__ import annotations

from pathlib import Path

import pytest

from k2.broker.runtime import new_cluster_id, render_server_properties
from k2.config import BrokerSettings, KafkaSettings


def _render(**broker: object) -> dict[str, str]:
    settings = BrokerSettings(state_dir=Path("/srv/k2/broker"), **broker)  # type: ignore[arg-type]
    text = render_server_properties(settings, KafkaSettings(partitions=12))
    pairs = [line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return {key: value for key, value in pairs}


def test_node_is_broker_and_its_own_single_voter_controller() -> None:
    props = _render(host="127.0.0.1", controller_port=19093)
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["controller.listener.names"] == "CONTROLLER"


def test_clients_connect_to_the_configured_port_and_controller_listens_apart() -> None:
    props = _render(host="127.0.0.1", port=19092, controller_port=19093)
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"


def test_data_lives_in_the_state_dir() -> None:
    assert _render()["log.dirs"] == "/srv/k2/broker/data"


def test_topics_default_to_the_configured_partition_count() -> None:
    assert _render()["num.partitions"] == "12"


@pytest.mark.parametrize(
    "key",
    [
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "default.replication.factor",
        "min.insync.replicas",
    ],
)
def test_internal_topics_fit_a_single_node(key: str) -> None:
    assert _render()[key] == "1"


def test_misspelt_topics_are_not_auto_created() -> None:
    assert _render()["auto.create.topics.enable"] == "false"


def test_consumer_groups_join_without_delay() -> None:
    assert _render()["group.initial.rebalance.delay.ms"] == "0"


def test_large_batches_fit_and_disk_use_is_bounded() -> None:
    props = _render()
    assert int(props["message.max.bytes"]) >= 8 << 20
    assert int(props["log.retention.bytes"]) > int(props["log.segment.bytes"]) > 0
    assert int(props["log.retention.hours"]) > 0


def test_every_key_appears_once() -> None:
    settings = BrokerSettings(state_dir=Path("/x"))
    keys = [
        line.split("=", 1)[0]
        for line in render_server_properties(settings, KafkaSettings()).splitlines()
        if line and not line.startswith("#")
    ]
    assert len(keys) == len(set(keys))


def test_cluster_id_is_a_22_char_base64url_uuid_never_starting_with_a_dash() -> None:
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    for cluster_id in ids:
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert set(cluster_id) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
