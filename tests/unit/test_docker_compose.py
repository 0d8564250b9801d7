"""docker-compose.yml cannot be run here (no Docker engine), so check what can be checked: it
parses, every service is runnable, and the k2 services' K2_* settings build a valid Settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from k2.config import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _compose() -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_every_service_has_an_image_or_a_build_and_known_dependencies() -> None:
    services = _compose()["services"]
    assert isinstance(services, dict)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown service {dep}"


def test_k2_services_settings_are_valid_and_use_the_rest_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    assert isinstance(services, dict)
    env = services["k2-ingest"]["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert settings.iceberg.type == "rest"
    assert settings.iceberg.properties["s3.endpoint"] == "http://minio:9000"
    assert settings.kafka.bootstrap_servers == "kafka:9092"
