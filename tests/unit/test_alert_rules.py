"""k2's alert rules load, behave as their unit tests say, and each one leads to its runbook entry.

``promtool`` (Debian's ``prometheus`` package) checks the rules and runs
``config/prometheus/rules/k2.rules.test.yml``: input series for every alert, with cases that fire
and cases that must not. The checks here add what promtool cannot know: every alert names a
runbook anchor that exists in ``docs/runbook.md``, and every metric a rule reads is one k2 exports
(a misspelt name is not an error to Prometheus, just an alert that never fires).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from k2.observability import INGEST_SCRAPED, IngestMetrics, Metrics

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "config" / "prometheus"
RULES = PROMETHEUS_DIR / "rules" / "k2.rules.yml"
RULE_TESTS = PROMETHEUS_DIR / "rules" / "k2.rules.test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"

# What the issue asks alerts for, by the alert that covers it.
REQUIRED_ALERTS = {
    "K2IngestLagHigh",  # lag high
    "K2IngestDegradedAggressive",  # level >= AGGRESSIVE for > 5 min
    "K2IngestCircuitBreak",  # CIRCUIT_BREAK at all
    "K2Tier1FreshnessSlow",  # tier-1 freshness p99 above target
    "K2DeadLettersHigh",  # DLQ rate
    "K2GapRateHigh",  # gap rate
    "K2GapsLost",  # lost gaps
    "K2BackfillPendingTooLong",  # backfill pending too long
    "K2CommitFailing",  # commit failures
    "K2NoRecentCommit",  # no commit for N x the commit interval while data flows
    "K2ApiErrorsHigh",  # API 5xx rate
    "K2ApiLatencyHigh",  # query p99 high
    "K2TargetDown",  # a process down
}
_METRIC = re.compile(r"\b(?:k2|process|python)_[a-z0-9_]+\b")
_PROMETHEUS_OWN = {"up"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: apt-get install prometheus"
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)


def _alerts() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def _github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def _runbook_anchors() -> set[str]:
    return {
        _github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", RUNBOOK.read_text(), re.M)
    }


def k2_metric_names() -> set[str]:
    """Every series name a k2 process can export: the API's and ingest's registries (counters with
    ``_total``, histograms with ``_bucket``/``_sum``/``_count``), the scrape-time ingest metrics and
    the process collectors."""
    names: set[str] = set(INGEST_SCRAPED)
    for registry in (Metrics().registry, IngestMetrics().registry):
        for family in registry.collect():
            if family.type == "counter":
                names.add(f"{family.name}_total")
            elif family.type == "histogram":
                names |= {f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count")}
            else:
                names.add(family.name)
            names |= {sample.name for sample in family.samples}
    return names


def test_promtool_accepts_the_rules() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_example_prometheus_config_is_valid_and_loads_the_rules() -> None:
    result = _promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "k2.rules.yml" in result.stdout + result.stderr


def test_every_alert_behaves_as_its_promtool_unit_tests_say() -> None:
    result = _promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_the_issue_asks_for_exists() -> None:
    missing = REQUIRED_ALERTS - {a["alert"] for a in _alerts()}
    assert not missing, missing


def test_every_alert_has_unit_tests_that_fire_and_that_stay_quiet() -> None:
    cases: dict[str, list[list[Any]]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], []).append(case.get("exp_alerts") or [])
    for alert in _alerts():
        name = alert["alert"]
        assert any(cases.get(name, [])), f"{name}: no promtool case where it fires"
        assert any(not exp for exp in cases.get(name, [])), f"{name}: no promtool case where it stays quiet"


@pytest.mark.parametrize("alert", _alerts(), ids=lambda a: a["alert"])
def test_every_alert_has_a_severity_a_summary_and_a_runbook_entry(alert: dict[str, Any]) -> None:
    assert alert["labels"]["severity"] in {"critical", "warning"}
    annotations = alert["annotations"]
    assert annotations["summary"] and annotations["description"]
    url = annotations["runbook_url"]
    assert url == f"docs/runbook.md#{alert['alert'].lower()}", url
    assert url.partition("#")[2] in _runbook_anchors(), f"docs/runbook.md has no heading for {url}"


def test_every_metric_the_rules_read_is_one_k2_exports() -> None:
    known = k2_metric_names() | _PROMETHEUS_OWN
    used = {name for alert in _alerts() for name in _METRIC.findall(alert["expr"])}
    assert used, "no metric found in the rules: the pattern is wrong"
    assert used <= known, f"not exported by k2: {sorted(used - known)}"
    assert "k2_ingest_freshness_seconds_bucket" in known  # the registries were read, not just the scraped
