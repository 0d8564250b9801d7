"""The local Apache Kafka broker k2 develops and tests against: fetched by Maven, run as a JVM.

``LocalBroker`` owns the process and its files; ``ensure_k2_topics`` creates k2's topics (the DLQ
sized to hold what the data topics hold) on any broker, local or not.
"""

from k2.broker.runtime import BrokerStatus, LocalBroker
from k2.broker.topics import delete_topics, ensure_k2_topics, ensure_topics

__all__ = ["BrokerStatus", "LocalBroker", "delete_topics", "ensure_k2_topics", "ensure_topics"]
