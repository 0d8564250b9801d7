"""The hybrid read through the API, against real ingest processes, the real broker and Iceberg.

While two ingest processes commit every second and rebalance (the second joins, the first leaves),
a loop counts trades per symbol through ``POST /v1/sql``: no answer counts a message twice, no
symbol's count ever goes down, none exceeds what was produced, and after the drain every count
equals what was produced. Rows reach answers before their commit (the live part is used).
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from k2.api.app import create_app
from k2.config import Settings
from k2.feeds.report import FeedReport
from k2.feeds.simulator import SimulatorConfig, simulate
from k2.ingest.status import read_statuses
from k2.query.engine import open_engine
from lake_probe import start_ingest

COUNT_SQL = (
    "SELECT symbol, count(*) AS n, count(DISTINCT (exchange, session, seq)) AS distinct_n "
    "FROM trades GROUP BY symbol"
)


def _settings(k2_settings: Settings) -> Settings:
    ingest = k2_settings.ingest.model_copy(update={"flush_rows": 20_000, "flush_seconds": 1.0})
    return k2_settings.model_copy(update={"ingest": ingest})


def test_counts_through_the_api_never_double_never_drop_and_end_exact(
    k2_settings: Settings, tmp_path: Path
) -> None:
    settings = _settings(k2_settings)
    config = SimulatorConfig(
        seed=5, tier1=4, tier2=8, tier3=12, messages=120_000, rate=8_000, duplicate_rate=0.01
    )
    procs: list[subprocess.Popen[bytes]] = []
    try:
        _count_while_rebalancing(settings, config, tmp_path, procs)
    finally:
        for proc in procs:  # a failed assertion must not leave ingest running into the next test
            if proc.poll() is None:
                proc.kill()


def _count_while_rebalancing(
    settings: Settings, config: SimulatorConfig, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    first = start_ingest(settings, tmp_path / "a.log", "--writer-id", "hy-a")
    procs.append(first)
    client = TestClient(create_app(open_engine(settings), settings.api))
    report_box: dict[str, FeedReport] = {}
    feed = threading.Thread(target=lambda: report_box.update(r=simulate(settings, config, progress=False)))
    time.sleep(3)
    feed.start()
    time.sleep(4)
    second = start_ingest(settings, tmp_path / "b.log", "--writer-id", "hy-b", "--exit-when-idle", "5")
    procs.append(second)

    previous: Counter[str] = Counter()
    answers = live_answers = 0
    first_stopped = False
    started = time.monotonic()
    while feed.is_alive() or second.poll() is None:
        assert time.monotonic() - started < 240, "ingest did not drain"
        if not first_stopped and time.monotonic() - started > 12:
            first.send_signal(signal.SIGTERM)  # the first leaves: its partitions move to the second
            first_stopped = True
        r = client.post("/v1/sql", json={"sql": COUNT_SQL})
        assert r.status_code == 200, r.text
        body = r.json()
        counts = Counter({row["symbol"]: row["n"] for row in body["rows"]})
        for row in body["rows"]:
            assert row["n"] == row["distinct_n"], f"{row['symbol']} counted a message twice"
        for symbol, n in previous.items():
            assert counts[symbol] >= n, f"{symbol} went from {n} to {counts[symbol]}"
        previous = counts
        answers += 1
        live_answers += bool(body["coverage"]["live_from"])
        time.sleep(0.2)
    assert first.wait(timeout=60) == 0, (tmp_path / "a.log").read_text()[-3000:]
    assert second.wait(timeout=60) == 0, (tmp_path / "b.log").read_text()[-3000:]

    produced = Counter(key[2] for key in report_box["r"].valid_keys() if key[0] == "trades")
    final = client.post("/v1/sql", json={"sql": COUNT_SQL}).json()
    assert Counter({row["symbol"]: row["n"] for row in final["rows"]}) == produced
    assert all(previous[s] <= n for s, n in produced.items())
    assert answers >= 20 and live_answers >= 5, (answers, live_answers)


def test_an_ingest_process_that_stops_answering_does_not_hang_the_api_and_is_named(
    k2_settings: Settings, tmp_path: Path
) -> None:
    """SIGSTOP the only ingest process: the API answers within its timeout from history, names the
    partitions whose live part is missing, opens the breaker (later answers are immediate), and
    once the process runs again the answers are complete again."""
    ingest = k2_settings.ingest.model_copy(update={"flush_rows": 1_000_000, "flush_seconds": 120.0})
    live = k2_settings.live.model_copy(
        update={"timeout_s": 0.5, "breaker_failures": 2, "breaker_reset_s": 2.0}
    )
    settings = k2_settings.model_copy(update={"ingest": ingest, "live": live})
    proc = start_ingest(settings, tmp_path / "ingest.log", "--writer-id", "stopped")
    try:
        simulate(settings, SimulatorConfig(seed=9, tier1=2, tier2=2, tier3=2, messages=5_000), progress=False)
        client = TestClient(create_app(open_engine(settings), settings.api))
        query = {"sql": "SELECT count(*) AS n FROM trades"}
        deadline = time.monotonic() + 60
        while True:  # until the buffered rows are visible through the live part
            r = client.post("/v1/sql", json=query)
            assert r.status_code == 200, r.text
            body = r.json()
            if body["rows"][0]["n"] > 0 and body["coverage"]["live_from"]:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.5)
        live_count = body["rows"][0]["n"]
        assert body["coverage"]["complete"] is True
        _assert_ingest_metrics_show_the_buffer(settings, live_count)

        proc.send_signal(signal.SIGSTOP)
        timings = []
        for _ in range(4):
            t0 = time.monotonic()
            body = client.post("/v1/sql", json=query).json()
            timings.append(time.monotonic() - t0)
            assert body["coverage"]["complete"] is False
            assert any(m.startswith("trades/") for m in body["coverage"]["live_missing"]), body["coverage"]
            assert body["rows"][0]["n"] == 0  # nothing committed yet: history alone is empty
        assert max(timings) < 0.5 + 1.5, timings  # never hangs past the timeout
        assert timings[-1] < 0.3, timings  # the breaker is open: no waiting at all

        proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 30
        while True:  # the breaker half-opens after breaker_reset_s and closes on success
            body = client.post("/v1/sql", json=query).json()
            if body["coverage"]["complete"]:
                break
            assert time.monotonic() < deadline, body["coverage"]
            time.sleep(0.5)
        assert body["rows"][0]["n"] == live_count
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGTERM)
        if proc.wait(timeout=60) is None:
            proc.kill()


def _assert_ingest_metrics_show_the_buffer(settings: Settings, buffered_trades: int) -> None:
    """The process advertises its /metrics in its status file, and a scrape shows what it holds."""
    (status,) = read_statuses(settings.ingest.status_dir)
    assert status.metrics_endpoint, status
    text = httpx.get(status.metrics_endpoint, timeout=5).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("k2_ingest_live_buffer_rows", ())] >= buffered_trades
    consumed = sum(v for (name, _), v in samples.items() if name == "k2_ingest_messages_consumed_total")
    assert consumed >= buffered_trades
