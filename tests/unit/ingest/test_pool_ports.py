"""With fixed base ports, each child of ``k2 ingest --processes N`` gets base + i; 0 stays 0 (free)."""

from __future__ import annotations

import pytest

from k2.config import Settings
from k2.ingest.pool import child_ports


def test_children_get_consecutive_ports_from_a_fixed_base() -> None:
    assert child_ports(0, 9400, 8815) == {"K2_INGEST__METRICS_PORT": "9400", "K2_LIVE__PORT": "8815"}
    assert child_ports(2, 9400, 8815) == {"K2_INGEST__METRICS_PORT": "9402", "K2_LIVE__PORT": "8817"}


def test_a_zero_base_leaves_every_child_on_a_free_port() -> None:
    assert child_ports(3, 0, 0) == {}


def test_the_environment_is_read_back_by_the_child_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in child_ports(1, 9400, 8815).items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert (s.ingest.metrics_port, s.live.port) == (9401, 8816)
