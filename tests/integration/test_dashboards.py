"""Every Grafana panel shows data from a real k2, through a real Prometheus.

No Grafana server runs here, so the dashboards are tested where their data comes from: a feed
with duplicates, gaps, reordering and poison; a backlog deep enough (with the degradation bounds
scaled down) to shed and then backfill; a ``k2 ingest`` process; the ``k2 api`` process with GETs,
4xx answers and refused SQL; and Debian's ``prometheus`` scraping both every second (ingest found
through its status file, as ``docs/observability.md`` documents, with the alert rules loaded).
Then every target of every panel, template variables substituted, goes to Prometheus' HTTP API
and must return at least one series with a finite value. A panel whose query returns nothing
fails the test, by name.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from k2.config import DegradationSettings, Settings, settings_env
from k2.feeds.simulator import SimulatorConfig, simulate
from k2.ingest.metrics import file_sd_targets
from k2.ingest.status import read_statuses
from lake_probe import start_ingest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "config" / "grafana" / "dashboards").glob("*.json"))
RULES = ROOT / "config" / "prometheus" / "rules" / "k2.rules.yml"

# Template variables as Grafana would expand them with "All" selected. $__rate_interval is at
# least 4 scrape intervals in Grafana; a minute spans this whole short run.
VARIABLES = {"__rate_interval": "1m", "instance": ".*", "table": ".*", "route": ".*"}

# Targets with no data in a healthy run, each with the reason it cannot be produced here. Every
# other target must return data. (The alerts on the same metrics are covered by promtool tests.)
NO_DATA_IN_A_HEALTHY_RUN = {
    ("k2 / Query API", "Unhandled exceptions", "A"): "needs a bug: an exception no handler answers",
    ("k2 / Ingest", "Errors caught by ingest", "A"): "needs a Kafka error in a batch, a failed "
    "advisory commit or status write, or a metrics port clash",
}

# Grafana unit ids the dashboards may use (grafana-data valueFormats), besides custom ``suffix:``.
GRAFANA_UNITS = {
    "none", "short", "percent", "percentunit", "bytes", "decbytes", "s", "ms", "dtdurations",
    "mps", "rowsps", "reqps", "ops", "cps", "eps", "recps", "Bps", "binBps",
}  # fmt: skip

BACKLOG = 30_000
FAULTS = {"gap": 0.01, "duplicate": 0.01, "reorder": 0.01, "poison": 0.005}  # per market event
LIVE_RATE = 1_500  # market events per second while Prometheus watches
SETTLE_S = 10.0  # at least this long of live feed, API traffic and scrapes before asserting
DEADLINE_S = 40.0  # after the live feed starts, every panel must have data by then


def _panels() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        out += [(dash["title"], p) for p in dash["panels"]]
    return out


def _expand(expr: str) -> str:
    """Substitute ``$name`` and ``${name}`` for the known variables; PromQL's ``$1`` stays."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return VARIABLES[name] if name in VARIABLES else m.group(0)

    expanded = re.sub(r"\$\{(\w+)\}|\$([A-Za-z_]\w*)", sub, expr)
    leftover = re.findall(r"\$\{?[A-Za-z_]\w*", expanded)
    assert not leftover, f"unknown template variables {leftover} in {expr}"
    return expanded


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_every_panel_is_titled_described_and_has_a_unit() -> None:
    assert {p.name for p in DASHBOARDS} == {"k2-ingest.json", "k2-storage.json", "k2-query-api.json"}
    for title, panel in _panels():
        where = f"{title} / {panel.get('title')}"
        assert panel.get("title") and panel.get("description"), where
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit in GRAFANA_UNITS or str(unit).startswith("suffix:"), f"{where}: unit {unit!r}"
        assert panel["targets"] and all(t.get("expr") for t in panel["targets"]), where
        assert panel["datasource"]["uid"] == "prometheus", where
    targets = {(title, panel["title"], t["refId"]) for title, panel in _panels() for t in panel["targets"]}
    assert set(NO_DATA_IN_A_HEALTHY_RUN) <= targets, "an exception names a target that no longer exists"
    provisioning = ROOT / "config" / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["uid"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "k2.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_panel_query_returns_data_from_a_running_k2(k2_settings: Settings, tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus not found: apt-get install prometheus"
    api_port = _free_port()
    settings = _scaled_down(k2_settings, api_port)
    today = datetime.now(UTC).date()
    # The backlog is yesterday's session, the live feed today's: a new session is a reset, not a gap.
    session = int(f"{today - timedelta(days=1):%Y%m%d}")
    faults = {f"{name}_rate": rate for name, rate in FAULTS.items()}
    backlog = SimulatorConfig.model_validate(
        {"seed": 11, "messages": BACKLOG, "rate": 0, "session": session, **faults}
    )
    simulate(settings, backlog, progress=False)

    targets_file = tmp_path / "ingest-targets.json"
    targets_file.write_text("[]")
    with (
        _prometheus(prometheus, tmp_path, targets_file, api_port) as prom,
        _process(start_ingest(settings, tmp_path / "ingest.log")) as ingest,
    ):
        status = _wait_for_status(settings, ingest, tmp_path / "ingest.log")
        targets_file.write_text(json.dumps(file_sd_targets([status], time.time(), stale_after_s=60)))
        with _process(_start_api(settings, api_port, tmp_path / "api.log")) as api:
            base = f"http://127.0.0.1:{api_port}"
            _wait_until_live(api, base, tmp_path / "api.log")
            stop = threading.Event()
            traffic = threading.Thread(target=_api_traffic, args=(base, stop))
            with _process(_start_live_feed(settings, tmp_path / "feed.log")) as feed:
                traffic.start()
                try:
                    empty = _wait_for_every_panel(prom, ingest, api, feed)
                finally:
                    stop.set()
                    traffic.join(timeout=60)
            assert not empty, "panels whose query returned no data:\n" + "\n".join(empty)
            _assert_the_run_gave_the_panels_something_to_show(prom)
            _assert_rules_loaded(prom)


def _scaled_down(base: Settings, api_port: int) -> Settings:
    """Degradation bounds a 30k backlog crosses (so shedding and backfill happen in seconds),
    commits every second and maintenance every other commit (so the storage panels move)."""
    return base.model_copy(
        update={
            "degradation": DegradationSettings(
                lag_thresholds=[2_000, 4_000, 8_000, 10**9], cooldown_s=1.0, defer_backlog=False
            ),
            "ingest": base.ingest.model_copy(update={"consume_batch": 2_000, "flush_seconds": 1.0}),
            "iceberg": base.iceberg.model_copy(
                update={
                    "maintenance_every_commits": 2,
                    "expire_snapshots_older_than_s": 5.0,
                    "keep_min_snapshots": 2,
                }
            ),
            "api": base.api.model_copy(update={"port": api_port, "max_sql_chars": 2_000}),
        }
    )


# -- the processes ---------------------------------------------------------------------------------


@contextmanager
def _process(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextmanager
def _prometheus(binary: str, tmp: Path, ingest_targets: Path, api_port: int) -> Iterator[str]:
    """Prometheus scraping every second: ingest via file_sd (the status file's endpoint), the API
    on its port; the alert rules loaded. Yields its base URL."""
    port = _free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {
                "job_name": "k2-ingest",
                "file_sd_configs": [{"files": [str(ingest_targets)], "refresh_interval": "1s"}],
            },
            {"job_name": "k2-api", "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]},
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = tmp / "prometheus.log"
    with open(log, "ab") as sink:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    with _process(proc):
        url = f"http://127.0.0.1:{port}"
        _wait_until(
            lambda: _get_ok(f"{url}/-/ready"), 30, lambda: f"prometheus not ready: {log.read_text()[-2000:]}"
        )
        yield url


def _start_api(settings: Settings, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings), "K2_LOG__FORMAT": "json"}
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "k2.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def _start_live_feed(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``k2 feed simulate`` (``simulate`` in a child, so the test can stop it): today's session,
    paced, with every kind of fault."""
    env = {**os.environ, **settings_env(settings), "K2_LOG__FORMAT": "json"}
    faults = [f"--{name}-rate={rate}" for name, rate in FAULTS.items()]
    args = ["feed", "simulate", f"--rate={LIVE_RATE}", f"--duration={DEADLINE_S + 30}", "--seed=12", *faults]
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "k2.cli", *args, "--no-progress"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def _wait_for_status(settings: Settings, proc: subprocess.Popen[bytes], log: Path) -> Any:
    def advertised() -> bool:
        assert proc.poll() is None, f"ingest exited: {log.read_text()[-3000:]}"
        return any(s.metrics_endpoint for s in read_statuses(settings.ingest.status_dir))

    _wait_until(advertised, 60, lambda: "ingest never advertised its metrics endpoint")
    (status,) = read_statuses(settings.ingest.status_dir)
    return status


def _wait_until_live(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    def live() -> bool:
        assert proc.poll() is None, f"api exited: {log.read_text()[-3000:]}"
        return _get_ok(f"{base}/health/live")

    _wait_until(live, 60, lambda: "the api never answered /health/live")


def _get_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_until(check: Any, timeout_s: float, message: Any) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, message()
        time.sleep(0.2)


def _api_traffic(base: str, stop: threading.Event) -> None:
    """What users do, answered or refused: reads of every kind, a 404, a 422, refused SQL."""
    sql = "/v1/sql"
    requests: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "/v1/trades?symbol=SIM1A001&last=10", None),
        ("GET", "/v1/quotes?symbol=SIM1A001&last=10", None),
        ("GET", "/v1/snapshot?symbols=SIM1A001,SIM1A002", None),
        ("GET", "/v1/bars?symbol=SIM1A001", None),
        ("GET", "/v1/gaps?limit=10", None),
        ("GET", "/v1/status", None),
        ("POST", sql, {"sql": "SELECT count(*) AS n FROM trades"}),
        ("GET", "/v1/trades?limit=0", None),  # 422: limit below 1
        ("GET", "/v1/no-such-route", None),  # 404
        ("POST", sql, {"sql": "DELETE FROM trades"}),  # refused: not a SELECT
        ("POST", sql, {"sql": "   "}),  # refused: empty
        ("POST", sql, {"sql": "SELECT 1 -- " + "x" * 2_100}),  # refused: too long
    ]
    with httpx.Client(base_url=base, timeout=15) as client:
        while not stop.is_set():
            for method, path, body in requests:
                # A slow answer under load is not what this test is about: the next round follows.
                with contextlib.suppress(httpx.HTTPError):
                    client.request(method, path, json=body)
            stop.wait(0.3)  # well under the per-client rate limit (50/s)


# -- asking Prometheus ---------------------------------------------------------------------------


def _query(prom: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(series["value"][1])) for series in result)


def _empty_panels(prom: str) -> list[str]:
    empty = []
    for title, panel in _panels():
        for target in panel["targets"]:
            key = (title, panel["title"], target["refId"])
            if key in NO_DATA_IN_A_HEALTHY_RUN:
                continue
            if not _has_data(_query(prom, _expand(target["expr"]))):
                empty.append(f"  {title} / {panel['title']} [{target['refId']}]: {target['expr']}")
    return empty


def _empty_variables(prom: str) -> list[str]:
    """Each dashboard variable is ``label_values(metric, label)``: the values must exist."""
    empty = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for var in dash["templating"]["list"]:
            m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", var["definition"])
            assert m, f"{path.name}: variable {var['name']}: {var['definition']}"
            r = httpx.get(
                f"{prom}/api/v1/label/{m.group(2)}/values", params={"match[]": m.group(1)}, timeout=10
            )
            if not r.json()["data"]:
                empty.append(f"  {dash['title']} variable ${var['name']}: {var['definition']}")
    return empty


def _wait_for_every_panel(prom: str, *procs: subprocess.Popen[bytes]) -> list[str]:
    """Poll until every panel has data (after ``SETTLE_S`` of live traffic) or ``DEADLINE_S``."""
    started = time.monotonic()
    time.sleep(SETTLE_S)
    while True:
        assert all(p.poll() is None for p in procs), "a k2 process exited during the test"
        up = {s["metric"]["job"]: s["value"][1] for s in _query(prom, "up")}
        assert up == {"k2-ingest": "1", "k2-api": "1"}, f"scrape targets not all up: {up}"
        empty = _empty_panels(prom) + _empty_variables(prom)
        if not empty or time.monotonic() - started > DEADLINE_S:
            return empty
        time.sleep(2)


def _assert_the_run_gave_the_panels_something_to_show(prom: str) -> None:
    """Zero is data too: check the run did shed, backfill, dead-letter, refuse and err."""

    def total(expr: str) -> float:
        return sum(float(s["value"][1]) for s in _query(prom, expr))

    for counter in (
        "k2_ingest_degradation_transitions_total",
        "k2_ingest_messages_shed_total",
        "k2_ingest_messages_backfilled_total",
        "k2_ingest_dead_letters_total",
        "k2_ingest_gaps_opened_total",
        "k2_ingest_duplicates_total",
        "k2_ingest_maintenance_runs_total",
    ):
        assert total(f"sum({counter})") > 0, f"{counter} stayed at 0"
    reasons = {s["metric"]["reason"] for s in _query(prom, "k2_api_sql_rejected_total")}
    assert reasons >= {"empty", "not_select", "too_long"}, reasons
    statuses = {s["metric"]["status"] for s in _query(prom, "k2_api_requests_total")}
    assert statuses >= {"200", "400", "404", "422"}, statuses


def _assert_rules_loaded(prom: str) -> None:
    expected = {
        r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r
    }
    body = httpx.get(f"{prom}/api/v1/rules", timeout=10).json()
    rules = [r for g in body["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == expected
    unhealthy = [(r["name"], r.get("health"), r.get("lastError")) for r in rules if r.get("health") != "ok"]
    assert not unhealthy, unhealthy
    firing = {r["name"] for r in rules for a in r.get("alerts", []) if a["state"] == "firing"}
    assert not firing & {"K2TargetDown", "K2IngestAbsent", "K2CommitFailing"}, firing
