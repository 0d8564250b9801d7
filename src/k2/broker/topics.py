"""Create and delete k2's topics on a broker, idempotently.

Topics are created explicitly (the local broker runs with ``auto.create.topics.enable=false``) so a
typo in a topic name fails loudly instead of silently producing into a one-partition topic.

Invariant: when :func:`ensure_topics` returns, every named topic is visible in the broker's
metadata with exactly the requested partition count and a leader for each partition, so a
producer or consumer started right after sees the same layout the ingest path assumes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import Future

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from k2.errors import BrokerError

__all__ = ["delete_topics", "ensure_topics", "list_topics"]

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


def admin_client(bootstrap: str) -> AdminClient:
    """An AdminClient that fails fast, so callers can own the retry deadline."""
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000})


def list_topics(bootstrap: str, timeout: float = 5.0) -> list[str]:
    """User topics on the broker, sorted; internal ``__`` topics are left out."""
    metadata = admin_client(bootstrap).list_topics(timeout=timeout)
    return sorted(name for name in metadata.topics if not name.startswith("__"))


def ensure_topics(bootstrap: str, names: list[str], partitions: int, timeout: float = 30) -> None:
    """Create the topics that are missing and wait until all of them are fully visible.

    An existing topic with a different partition count is an error rather than something to fix:
    repartitioning would move keys between partitions and break per-partition ordering.
    """
    admin = admin_client(bootstrap)
    deadline = time.monotonic() + timeout
    pending = _missing(_metadata(admin, deadline), names, partitions)
    while pending:
        _create(admin, pending, partitions, deadline)
        pending = _missing(_metadata(admin, deadline), names, partitions)
        if pending:
            _sleep_or_fail(deadline, f"topics {sorted(pending)} not visible with {partitions} partitions")


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


def _create(admin: AdminClient, names: Iterable[str], partitions: int, deadline: float) -> None:
    new = [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names]
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
