"""The local Apache Kafka broker k2 develops and tests against: fetched by Maven, run as a JVM.

``LocalBroker`` owns the process and its files; ``ensure_topics`` creates k2's topics on any
broker, local or not.
"""

from k2.broker.runtime import BrokerStatus, LocalBroker
from k2.broker.topics import delete_topics, ensure_topics

__all__ = ["BrokerStatus", "LocalBroker", "delete_topics", "ensure_topics"]
