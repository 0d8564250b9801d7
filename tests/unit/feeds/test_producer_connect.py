"""FeedProducer.connect fails fast, with the address, when no broker answers."""

from __future__ import annotations

import socket
import time

import pytest

from k2.config import KafkaSettings
from k2.errors import FeedError
from k2.feeds.producer import FeedProducer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connect_to_a_closed_port_raises_feed_error_naming_the_address() -> None:
    address = f"127.0.0.1:{free_port()}"
    producer = FeedProducer(KafkaSettings(bootstrap_servers=address))
    started = time.monotonic()
    with pytest.raises(FeedError, match=address):
        producer.connect(["trades"], timeout=1.0)
    assert time.monotonic() - started < 10
