"""Create and delete k2's topics on a broker, idempotently.

Topics are created explicitly (the local broker runs with ``auto.create.topics.enable=false``) so a
typo in a topic name fails loudly instead of silently producing into a one-partition topic.

Invariant: when :func:`ensure_topics` returns, every named topic is visible in the broker's
metadata with exactly the requested partition count and a leader for each partition, so a
producer or consumer started right after sees the same layout the ingest path assumes.

Sizing: the DLQ must hold any record the data topics hold, plus k2's own ``k2.*`` headers, or a
large poison record could neither land nor be dead-lettered and ingest would stop on it forever.
:func:`ensure_k2_topics` therefore creates the data topics first, reads the largest record batch
they accept (their effective ``max.message.bytes``, which defaults to the broker's
``message.max.bytes``) and creates the DLQ with that plus :data:`DLQ_HEADROOM_BYTES`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, ConfigResource, NewTopic, ResourceType

from k2.config import TopicNames
from k2.errors import BrokerError
from k2.logs import get_logger

__all__ = [
    "DLQ_HEADROOM_BYTES",
    "delete_topics",
    "ensure_k2_topics",
    "ensure_topics",
    "list_topics",
    "max_message_bytes",
]

# Room in each DLQ record for k2's headers on top of a source record: they take under 2 KiB
# (``k2.detail`` is capped at 1000 bytes, a topic name at 249), the rest is spare.
DLQ_HEADROOM_BYTES = 64 << 10
_MAX_MESSAGE_BYTES = "max.message.bytes"

# Errors a freshly started KRaft broker returns until it has registered and been unfenced.
_TRANSIENT = {
    KafkaError.INVALID_REPLICATION_FACTOR,
    KafkaError.BROKER_NOT_AVAILABLE,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_CONTROLLER,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
}
_POLL_S = 0.2

_log = get_logger("topics")


def admin_client(bootstrap: str, properties: Mapping[str, object] | None = None) -> AdminClient:
    """An AdminClient that fails fast, so callers can own the retry deadline.

    ``properties`` (librdkafka, e.g. security settings) are applied on top.
    """
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000, **(properties or {})})


def list_topics(bootstrap: str, timeout: float = 5.0) -> list[str]:
    """User topics on the broker, sorted; internal ``__`` topics are left out."""
    metadata = admin_client(bootstrap).list_topics(timeout=timeout)
    return sorted(name for name in metadata.topics if not name.startswith("__"))


def ensure_topics(
    bootstrap: str,
    names: list[str],
    partitions: int,
    *,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    timeout: float = 30,
) -> None:
    """Create the topics that are missing and wait until all of them are fully visible.

    ``configs`` maps a topic name to the topic configs it is created with (e.g.
    ``{"dlq": {"max.message.bytes": "1114112"}}``); an existing topic keeps the configs it has.
    An existing topic with a different partition count is an error rather than something to fix:
    repartitioning would move keys between partitions and break per-partition ordering.

    Raises:
        BrokerError: a topic exists with another partition count, or the broker did not answer
            within ``timeout``.
    """
    admin = admin_client(bootstrap)
    deadline = time.monotonic() + timeout
    pending = _missing(_metadata(admin, deadline), names, partitions)
    while pending:
        _create(admin, pending, partitions, configs or {}, deadline)
        pending = _missing(_metadata(admin, deadline), names, partitions)
        if pending:
            _sleep_or_fail(deadline, f"topics {sorted(pending)} not visible with {partitions} partitions")


def ensure_k2_topics(
    bootstrap: str, topics: TopicNames, partitions: int, *, timeout: float = 30
) -> dict[str, int]:
    """Create k2's data topics, then a DLQ sized to hold any record they hold plus k2's headers.

    Returns every k2 topic's effective ``max.message.bytes``. A DLQ that already exists with a
    smaller limit is left alone (changing an operator's topic is the operator's call) and logged
    as a warning: the DLQ producer then truncates the dead letters that do not fit.

    Raises:
        BrokerError: as :func:`ensure_topics`, or the topics' configs could not be read.
    """
    deadline = time.monotonic() + timeout
    data = topics.data_topics()
    ensure_topics(bootstrap, data, partitions, timeout=timeout)
    admin = admin_client(bootstrap)
    limits = max_message_bytes(admin, data, timeout=_remaining(deadline))
    wanted = max(limits.values()) + DLQ_HEADROOM_BYTES
    ensure_topics(
        bootstrap,
        [topics.dlq],
        partitions,
        configs={topics.dlq: {_MAX_MESSAGE_BYTES: str(wanted)}},
        timeout=_remaining(deadline),
    )
    limits |= max_message_bytes(admin, [topics.dlq], timeout=_remaining(deadline))
    if limits[topics.dlq] < wanted:
        _log.warning(
            "dlq_smaller_than_sources",
            dlq=topics.dlq,
            dlq_max_message_bytes=limits[topics.dlq],
            wanted=wanted,
            hint=f"kafka-configs.sh --bootstrap-server {bootstrap} --alter --entity-type topics "
            f"--entity-name {topics.dlq} --add-config {_MAX_MESSAGE_BYTES}={wanted}; "
            "until then the largest dead letters are truncated",
        )
    return limits


def max_message_bytes(admin: AdminClient, names: list[str], timeout: float = 10) -> dict[str, int]:
    """Each topic's effective ``max.message.bytes``: the largest record batch its broker accepts.

    Raises:
        BrokerError: the configs could not be read (e.g. no DescribeConfigs permission).
    """
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=max(1.0, timeout))
    limits: dict[str, int] = {}
    for resource, future in futures.items():
        try:
            entry = future.result()[_MAX_MESSAGE_BYTES]
        except (KafkaException, KeyError) as exc:
            raise BrokerError(f"could not read {_MAX_MESSAGE_BYTES} of topic {resource.name}: {exc}") from exc
        limits[resource.name] = int(entry.value)
    return limits


def delete_topics(bootstrap: str, names: list[str], timeout: float = 30) -> None:
    """Delete the topics (missing ones are fine) and wait until metadata no longer shows them."""
    admin = admin_client(bootstrap)
    deadline = time.monotonic() + timeout
    if not names:
        return
    futures = admin.delete_topics(names, operation_timeout=_remaining(deadline))
    _settle(futures, ok={KafkaError.UNKNOWN_TOPIC_OR_PART}, action="delete")
    while present := set(names) & set(_metadata(admin, deadline).topics):
        _sleep_or_fail(deadline, f"topics {sorted(present)} still present after delete")


def _create(
    admin: AdminClient,
    names: Iterable[str],
    partitions: int,
    configs: Mapping[str, Mapping[str, str]],
    deadline: float,
) -> None:
    new = [
        NewTopic(name, num_partitions=partitions, replication_factor=1, config=dict(configs.get(name, {})))
        for name in names
    ]
    futures = admin.create_topics(new, operation_timeout=_remaining(deadline))
    _settle(futures, ok={KafkaError.TOPIC_ALREADY_EXISTS}, action="create")


def _settle(futures: dict[str, Future[None]], ok: set[int], action: str) -> None:
    """Wait for per-topic admin results; codes in ``ok`` and transient codes are not failures.

    Transient failures are left for the caller's metadata loop to retry.
    """
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() in ok or error.code() in _TRANSIENT or error.retriable():
                continue
            raise BrokerError(f"could not {action} topic {name}: {error.str()}") from exc


def _metadata(admin: AdminClient, deadline: float) -> ClusterMetadata:
    while True:
        try:
            return admin.list_topics(timeout=max(0.5, min(5.0, _remaining(deadline))))
        except KafkaException as exc:
            _sleep_or_fail(deadline, f"broker metadata unavailable: {exc}")


def _missing(metadata: ClusterMetadata, names: list[str], partitions: int) -> set[str]:
    """Names not yet fully usable; raises if a topic exists with the wrong partition count."""
    missing = set()
    for name in names:
        topic = metadata.topics.get(name)
        if topic is None or topic.error is not None:
            missing.add(name)
            continue
        if len(topic.partitions) != partitions:
            raise BrokerError(
                f"topic {name} exists with {len(topic.partitions)} partitions, expected {partitions}; "
                "delete it (or reset the local broker) to change the partition count"
            )
        if any(p.leader < 0 for p in topic.partitions.values()):
            missing.add(name)
    return missing


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _sleep_or_fail(deadline: float, what: str) -> None:
    if time.monotonic() >= deadline:
        raise BrokerError(f"timed out: {what}")
    time.sleep(_POLL_S)
