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


def _k2_services() -> dict[str, dict[str, object]]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return {n: s for n, s in services.items() if s.get("build") == "."}


def _env(svc: dict[str, object]) -> dict[str, str]:
    env = svc.get("environment", {})
    assert isinstance(env, dict)
    return {k: str(v) for k, v in env.items()}


def test_every_k2_service_runs_a_command_the_cli_has_with_options_it_knows() -> None:
    from typer.main import get_command

    from k2.cli import app

    cli = get_command(app)
    for name, svc in _k2_services().items():
        command = svc.get("command")
        if command is None:  # the one-off tools service: any command
            continue
        assert isinstance(command, list)
        words = [w for w in command if not w.startswith("-")]
        group = cli
        for word in words:
            sub = getattr(group, "commands", {}).get(word)
            if sub is None:
                break
            group = sub
            sub.make_context(
                word, list(command[command.index(word) + 1 :])
            )  # parses options: raises if unknown
        assert group is not cli, f"{name}: unknown command {command}"


def test_every_k2_service_builds_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, svc in _k2_services().items():
        with monkeypatch.context() as m:
            for key in [k for k in __import__("os").environ if k.startswith("K2_")]:
                m.delenv(key)
            for key, value in _env(svc).items():
                m.setenv(key, value)
            settings = Settings()  # raises on an unknown key or a bad value
            assert settings.iceberg.type == "rest", name


def test_the_api_is_told_where_ingest_serves_its_live_buffer_and_prometheus_where_to_scrape() -> None:
    services = _k2_services()
    ingest, api = _env(services["k2-ingest"]), _env(services["k2-api"])
    live_port = ingest["K2_LIVE__PORT"]
    assert f"grpc://k2-ingest:{live_port}" in api["K2_LIVE__ENDPOINTS"]
    prometheus = yaml.safe_load((COMPOSE.parent / "config/prometheus/prometheus.yml").read_text())
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for sc in job.get("static_configs", [])
        for t in sc["targets"]
    }
    assert f"k2-ingest:{ingest['K2_INGEST__METRICS_PORT']}" in targets
    assert "k2-api:8000" in targets


def test_every_mounted_config_exists_and_parses() -> None:
    import json

    services = _compose()["services"]
    assert isinstance(services, dict)
    mounts = 0
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("./"):
                continue
            path = COMPOSE.parent / source
            assert path.exists(), f"{name} mounts missing {source}"
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            assert files, f"{name} mounts an empty {source}"
            for f in files:
                if f.suffix in (".yml", ".yaml"):
                    yaml.safe_load(f.read_text())
                elif f.suffix == ".json":
                    json.loads(f.read_text())
                mounts += 1
    assert mounts >= 5  # prometheus config + rules, grafana provisioning + three dashboards
