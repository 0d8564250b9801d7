"""User SQL through the real API and the real engine over a small real warehouse: every escape
attempt is refused with a JSON reason, nothing of the host leaks, the API answers the next query,
and the warehouse is never writable from user SQL (every file hashes the same afterwards)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from api_fake_engine import ManualClock
from fastapi.testclient import TestClient

from k2.api import create_app
from k2.api.guard import API_KEY_HEADER
from k2.bench.synthetic import SyntheticTape, write_history
from k2.config import ApiSettings, IcebergSettings, LiveSettings, Settings
from k2.lake import TableWriter, ensure_tables, open_catalog
from k2.observability import Metrics
from k2.query.engine import Engine, open_engine

KEY = "k2-test-key-7f3a"
ROWS = 240
_T0 = int(datetime(2026, 3, 10, 23, 0, tzinfo=UTC).timestamp() * 1_000_000)


@dataclass
class Warehouse:
    root: Path
    engine: Engine
    settings: Settings
    initial: dict[str, str]  # sha256 of every file, as written before any user SQL ran

    def hashes(self) -> dict[str, str]:
        # catalog.db-shm is SQLite's shared-memory index, rewritten by the API's own catalog reads.
        return {
            str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and not p.name.endswith("-shm")
        }


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    base = tmp_path_factory.mktemp("sqlsec")
    iceberg = IcebergSettings(warehouse=str(base / "wh"))
    catalog = open_catalog(iceberg)
    tables = ensure_tables(catalog, iceberg)
    tape = SyntheticTape(["BHP", "CBA", "RIO"], partitions=2, start_us=_T0, exchange="ASX", session=20260311)
    write_history(TableWriter(tables["trades"], "trades", "sqlsec"), tape, ROWS, commits=3)
    catalog.engine.dispose()  # type: ignore[attr-defined]
    settings = Settings(
        iceberg=iceberg,
        live=LiveSettings(enabled=False),
        ingest={"status_dir": base / "status"},  # type: ignore[arg-type]
        api=ApiSettings(
            api_keys=[KEY],
            rate_limit_per_s=1_000.0,
            rate_limit_burst=1_000,
            sql_timeout_s=1.0,
            duckdb_memory_limit="256MB",
            duckdb_threads=2,
        ),
    )
    wh = Warehouse(base / "wh", open_engine(settings), settings, {})
    assert wh.engine.sql("SELECT count(*) AS n FROM trades", max_rows=1).rows.to_pylist() == [{"n": ROWS}]
    wh.initial = wh.hashes()  # after the engine opened the catalog (SQLite adds its -wal file)
    yield wh


@pytest.fixture(scope="module")
def api(warehouse: Warehouse) -> Iterator[TestClient]:
    app = create_app(warehouse.engine, warehouse.settings.api, metrics=Metrics())
    with TestClient(app) as client:
        yield client


def _sql(client: TestClient, text: str, key: str | None = KEY) -> httpx.Response:
    headers = {API_KEY_HEADER: key} if key is not None else {}
    return client.post("/v1/sql", json={"sql": text}, headers=headers)


def _no_leak(text: str, warehouse: Warehouse) -> None:
    """Nothing of the host in an answer: no file contents, no server paths, no tracebacks."""
    for needle in (
        "root:x:0:0",
        "root:",
        str(warehouse.root),
        str(warehouse.root.parent),
        "site-packages",
        ".venv",
        "Traceback",
        "Stack Trace",
        KEY,
    ):
        assert needle not in text, needle


def _still_answers(client: TestClient) -> None:
    r = _sql(client, "SELECT count(*) AS n FROM trades")
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [{"n": ROWS}]


# (SQL, the reasons that say why); ``{wh}`` is replaced by the warehouse path.
ATTACKS: list[tuple[str, set[str]]] = [
    ("SELECT * FROM read_csv('/etc/passwd')", {"forbidden_function"}),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", {"forbidden_function"}),
    ("SELECT read_text('/etc/passwd')", {"forbidden_function"}),
    ("SELECT * FROM read_text('/etc/passwd')", {"forbidden_function"}),
    ("SELECT content FROM read_blob('{wh}/catalog.db')", {"forbidden_function"}),
    ("SELECT * FROM glob('/*')", {"forbidden_function"}),
    ("SELECT * FROM '/etc/passwd'", {"forbidden_table"}),
    ('SELECT * FROM "{wh}/catalog.db"', {"forbidden_table"}),
    ("SELECT * FROM read_parquet('{wh}/market/trades/data/*.parquet')", {"forbidden_function"}),
    ("COPY trades TO '{wh}/stolen.csv'", {"not_select"}),
    ("COPY (SELECT 1 AS x) TO '{wh}/market/trades/data/evil.parquet' (FORMAT parquet)", {"not_select"}),
    ("ATTACH '{wh}/catalog.db' AS cat", {"not_select"}),
    ("ATTACH ':memory:' AS m", {"not_select"}),
    ("EXPORT DATABASE '{wh}/export'", {"not_select"}),
    ("IMPORT DATABASE '{wh}'", {"not_select", "permission", "parse_error"}),
    ("INSTALL httpfs", {"not_select"}),
    ("LOAD httpfs", {"not_select"}),
    ("SELECT * FROM 'https://example.com/trades.csv'", {"forbidden_table"}),
    ("SELECT * FROM read_parquet('http://169.254.169.254/latest/meta-data')", {"forbidden_function"}),
    ("SELECT * FROM read_json('s3://bucket/key.json')", {"forbidden_function"}),
    ("SET memory_limit = '64GB'", {"not_select"}),
    ("SET enable_external_access = true", {"not_select"}),
    ("RESET lock_configuration", {"not_select"}),
    ("PRAGMA enable_profiling", {"not_select"}),
    ("PRAGMA database_list", {"not_select"}),
    ("CALL pragma_version()", {"not_select"}),
    ("CREATE TABLE evil AS SELECT * FROM trades", {"not_select"}),
    ("CREATE OR REPLACE VIEW trades AS SELECT 1 AS x", {"not_select"}),
    ("CREATE SECRET s (TYPE s3, KEY_ID 'a', SECRET 'b')", {"not_select"}),
    ("INSERT INTO trades SELECT * FROM trades", {"not_select"}),
    ("UPDATE trades SET price = 0", {"not_select"}),
    ("DELETE FROM trades", {"not_select"}),
    ("DROP VIEW trades", {"not_select"}),
    ("SELECT 1; DROP VIEW trades", {"multiple_statements"}),
    ("SELECT 1; COPY trades TO '{wh}/x.csv'", {"multiple_statements"}),
    ("SELECT * FROM duckdb_secrets()", {"forbidden_function"}),
    ("SELECT * FROM duckdb_settings()", {"forbidden_function"}),
    ("SELECT * FROM duckdb_tables", {"forbidden_table"}),
    ("SELECT * FROM information_schema.tables", {"forbidden_table"}),
    ("SELECT getenv('HOME')", {"forbidden_function"}),
    ("SELECT current_setting('temp_directory')", {"forbidden_function"}),
    ("SELECT * FROM query('COPY trades TO ''/tmp/x.csv''')", {"forbidden_function"}),
    ("SELECT f.read_text() FROM (SELECT '/etc/passwd' AS f)", {"forbidden_function"}),
    ("SELECT * FROM trades__history_x", {"sql_error"}),
]


@pytest.mark.parametrize(("sql", "reasons"), ATTACKS, ids=[a for a, _ in ATTACKS])
def test_escape_attempts_are_refused_with_a_reason_and_nothing_leaks(
    api: TestClient, warehouse: Warehouse, sql: str, reasons: set[str]
) -> None:
    text = sql.replace("{wh}", str(warehouse.root))
    r = _sql(api, text)
    assert 400 <= r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["error"] in reasons, body
    assert body["detail"]
    # The body may quote the caller's own text (and a path they named) back; nothing of the server.
    echoed = r.text.replace(json.dumps(text)[1:-1], "")
    if "{wh}" in sql:
        echoed = echoed.replace(str(warehouse.root), "<the path asked for>")
    _no_leak(echoed, warehouse)
    _still_answers(api)


def test_a_cross_join_bomb_is_stopped_and_the_api_answers_after(
    api: TestClient, warehouse: Warehouse
) -> None:
    r = _sql(api, "SELECT sum(a.range * b.range) FROM range(1000000000) a, range(1000000000) b")
    assert (r.status_code, r.json()["error"]) in {(408, "query_timeout"), (400, "out_of_memory")}
    _no_leak(r.text, warehouse)
    r = _sql(api, "SELECT count(*) FROM trades a, trades b, trades c, trades d, trades e")
    assert (r.status_code, r.json()["error"]) in {(408, "query_timeout"), (400, "out_of_memory")}
    _still_answers(api)


def test_an_oversized_body_is_413_and_long_sql_is_400(api: TestClient, warehouse: Warehouse) -> None:
    big = json.dumps({"sql": "SELECT " + "1+" * 40_000 + "1"}).encode()
    r = api.post("/v1/sql", content=big, headers={API_KEY_HEADER: KEY, "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    r = _sql(api, "SELECT " + "1+" * 6_000 + "1")
    assert r.status_code == 400 and r.json()["error"] == "too_long"
    _still_answers(api)


@pytest.mark.parametrize("key", [None, "", "wrong-key", KEY + "x", KEY.upper()])
def test_a_missing_or_wrong_key_is_401(api: TestClient, warehouse: Warehouse, key: str | None) -> None:
    r = _sql(api, "SELECT count(*) FROM trades", key=key)
    assert r.status_code == 401, r.text
    body = r.json()
    assert body["error"] == "unauthorized" and body["detail"]
    _no_leak(r.text, warehouse)
    if key:
        assert key not in r.text
    _still_answers(api)


def test_over_the_rate_limit_is_429_with_retry_after(warehouse: Warehouse) -> None:
    settings = warehouse.settings.api.model_copy(update={"rate_limit_per_s": 0.5, "rate_limit_burst": 2})
    clock = ManualClock()
    app = create_app(warehouse.engine, settings, metrics=Metrics(), clock=clock)
    with TestClient(app) as client:
        assert [_sql(client, "SELECT 1 AS x").status_code for _ in range(2)] == [200, 200]
        r = _sql(client, "SELECT 1 AS x")
        assert r.status_code == 429
        assert r.json()["error"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
        clock.now += 2.0
        _still_answers(client)


def test_user_sql_never_changes_the_warehouse(api: TestClient, warehouse: Warehouse) -> None:
    before = warehouse.initial
    assert any(name.endswith(".parquet") for name in before) and "catalog.db" in before
    for sql, _ in ATTACKS:  # again, whatever ran before in this module
        assert _sql(api, sql.replace("{wh}", str(warehouse.root))).status_code in (400, 408)
    assert warehouse.hashes() == before
    _still_answers(api)
