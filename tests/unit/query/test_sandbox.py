"""The SQL sandbox: what user SQL may not do, and that it still answers afterwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k2.config import ApiSettings
from k2.errors import ConfigError, QueryRejected, QueryTimeout
from k2.query.sandbox import CheckedSql, Sandbox

_SETTINGS = ApiSettings(
    max_sql_chars=10_000, max_rows=1_000, sql_timeout_s=10.0, duckdb_memory_limit="256MB", duckdb_threads=2
)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(_SETTINGS) as box:
        yield box


def _still_answers(sandbox: Sandbox) -> None:
    with sandbox.session() as cur:
        table, truncated = sandbox.run(cur, "SELECT 42 AS answer")
    assert table.to_pylist() == [{"answer": 42}]
    assert not truncated


def _refused(sandbox: Sandbox, sql: str) -> QueryRejected:
    with pytest.raises(QueryRejected) as caught:
        sandbox.check(sql)
    assert "root:" not in str(caught.value)  # no line of /etc/passwd in the answer
    _still_answers(sandbox)
    return caught.value


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "forbidden_function"),
        ("SELECT * FROM read_text('/etc/passwd')", "forbidden_function"),
        ("SELECT * FROM read_blob('/etc/passwd')", "forbidden_function"),
        ("SELECT * FROM glob('/*')", "forbidden_function"),
        ("SELECT * FROM duckdb_secrets()", "forbidden_function"),
        ("SELECT * FROM which_secret('s3://b/x', 's3')", "forbidden_function"),
        ("SELECT * FROM duckdb_settings()", "forbidden_function"),
        ("SELECT getenv('HOME')", "forbidden_function"),
        ("SELECT current_setting('secret_directory')", "forbidden_function"),
        ("SELECT * FROM query('SELECT 1')", "forbidden_function"),
        ("SELECT * FROM query_table('trades')", "forbidden_function"),
        ("SELECT * FROM json_execute_serialized_sql('{}')", "forbidden_function"),
        ("SELECT * FROM arrow_scan(1, 2, 3)", "forbidden_function"),
        ("SELECT * FROM sniff_csv('/etc/passwd')", "forbidden_function"),
        ("SELECT * FROM parquet_metadata('/tmp/x.parquet')", "forbidden_function"),
        ("SELECT * FROM iceberg_scan('/tmp/warehouse/t')", "forbidden_function"),
        ("SELECT * FROM delta_scan('/tmp/t')", "forbidden_function"),
        ("SELECT * FROM histogram('trades', price)", "forbidden_function"),
        ("SELECT sleep_ms(100000)", "forbidden_function"),
        # Quoting, case, qualification and method-call syntax do not hide a name.
        ("SELECT * FROM \"READ_CSV\"('/etc/passwd')", "forbidden_function"),
        ("SELECT * FROM read_csv_auto('/etc/passwd')", "forbidden_function"),
        ("SELECT * FROM \"main\".read_csv('/etc/passwd')", "forbidden_function"),
        ("SELECT * FROM system.main.read_parquet('/tmp/x.parquet')", "forbidden_function"),
        ("SELECT s.read_text() FROM (SELECT '/etc/passwd' AS s)", "forbidden_function"),
        # Nested anywhere in the statement.
        ("SELECT * FROM (SELECT * FROM read_csv('/etc/passwd'))", "forbidden_function"),
        ("WITH x AS (FROM read_csv('/etc/passwd')) FROM x", "forbidden_function"),
        ("SELECT 1 WHERE EXISTS (FROM glob('/'))", "forbidden_function"),
        ("SELECT (SELECT getenv('HOME'))", "forbidden_function"),
        ("SELECT list_transform([1], x -> getenv('HOME'))", "forbidden_function"),
        ("SELECT 1 FROM range(2) t(p), LATERAL read_csv('/etc/' || p::VARCHAR)", "forbidden_function"),
        # Strings in FROM position are replacement scans on files and URLs.
        ("SELECT * FROM '/etc/passwd'", "forbidden_table"),
        ("SELECT * FROM 'https://example.com/x.parquet'", "forbidden_table"),
        ("SELECT * FROM 's3://bucket/x.parquet'", "forbidden_table"),
        ("FROM (FROM 'data.csv')", "forbidden_table"),
        ("DESCRIBE '/etc/passwd'", "forbidden_table"),
        ("SELECT * FROM duckdb_tables", "forbidden_table"),
        ("SELECT * FROM information_schema.tables", "forbidden_table"),
        ("SELECT * FROM pg_catalog.pg_class", "forbidden_table"),
        ("SHOW TABLES", "forbidden_table"),
        ("SHOW ALL TABLES", "forbidden_table"),
        # Only SELECT.
        ("COPY (SELECT 1) TO '/tmp/k2-sandbox-x.csv'", "not_select"),
        ("ATTACH '/tmp/k2-sandbox-x.db'", "not_select"),
        ("EXPORT DATABASE '/tmp/k2-sandbox-x'", "not_select"),
        ("IMPORT DATABASE '/tmp/k2-sandbox-x'", "permission"),  # DuckDB reads it while parsing
        ("INSTALL httpfs", "not_select"),
        ("LOAD httpfs", "not_select"),
        ("SET memory_limit = '10GB'", "not_select"),
        ("RESET memory_limit", "not_select"),
        ("PRAGMA version", "not_select"),
        ("PRAGMA show_tables", "not_select"),
        ("PRAGMA enable_profiling", "not_select"),
        ("CALL pragma_version()", "not_select"),
        ("CREATE TABLE t (x INTEGER)", "not_select"),
        ("CREATE TEMP VIEW v AS SELECT 1", "not_select"),
        ("CREATE MACRO m() AS 1", "not_select"),
        ("CREATE SECRET (TYPE s3, KEY_ID 'k', SECRET 's')", "not_select"),
        ("INSERT INTO t VALUES (1)", "not_select"),
        ("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", "not_select"),
        ("UPDATE t SET x = 1", "not_select"),
        ("DELETE FROM t", "not_select"),
        ("DROP TABLE t", "not_select"),
        ("DETACH memory", "not_select"),
        ("USE memory", "not_select"),
        ("CHECKPOINT", "not_select"),
        ("BEGIN TRANSACTION", "not_select"),
        ("PREPARE p AS SELECT 1", "not_select"),
        ("EXPLAIN ANALYZE SELECT 1", "not_select"),
        ("SELECT 1; DROP TABLE x", "multiple_statements"),
        ("SELECT 1; SELECT 2", "multiple_statements"),
    ],
)
def test_refused_at_the_gate_and_sandbox_still_answers(sandbox: Sandbox, sql: str, reason: str) -> None:
    assert _refused(sandbox, sql).reason == reason


def test_refused_statements_leave_no_file_behind(sandbox: Sandbox, tmp_path: Path) -> None:
    for sql in (
        f"COPY (SELECT 1) TO '{tmp_path}/x.csv'",
        f"ATTACH '{tmp_path}/x.db'",
        f"EXPORT DATABASE '{tmp_path}/export'",
    ):
        _refused(sandbox, sql)
        with sandbox.session() as cur, pytest.raises(QueryRejected):
            sandbox.run(cur, sql)  # run() puts plain text through the gate too
    assert list(tmp_path.iterdir()) == []


def test_import_database_is_not_expanded_from_files(sandbox: Sandbox, tmp_path: Path) -> None:
    # DuckDB expands IMPORT DATABASE while parsing, by reading schema.sql and load.sql.
    (tmp_path / "schema.sql").write_text("CREATE TABLE leak (x INTEGER);")
    (tmp_path / "load.sql").write_text("INSERT INTO leak VALUES (1);")
    assert _refused(sandbox, f"IMPORT DATABASE '{tmp_path}'").reason == "permission"
    with sandbox.session() as cur, pytest.raises(QueryRejected):
        sandbox.run(cur, "SELECT * FROM leak")


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT * FROM read_text('/etc/passwd')", "permission"),
        ("SELECT * FROM read_csv('/etc/passwd')", "permission"),
        ("SELECT * FROM glob('/*')", "permission"),
        ("SELECT * FROM '/etc/passwd'", "sql_error"),  # no known extension: no such table
        ("SELECT * FROM '/etc/passwd.csv'", "permission"),
        ("SELECT * FROM 'https://example.com/x.parquet'", "permission"),
        ("COPY (SELECT 1) TO '/tmp/k2-sandbox-x.csv'", "permission"),
        ("ATTACH '/tmp/k2-sandbox-x.db'", "permission"),
        ("INSTALL httpfs", "permission"),
        ("LOAD httpfs", "permission"),
        ("SET memory_limit = '10GB'", "sql_error"),
        ("SET enable_external_access = true", "sql_error"),
        ("SET lock_configuration = false", "sql_error"),
    ],
)
def test_settings_refuse_what_slips_past_the_gate(sandbox: Sandbox, sql: str, reason: str) -> None:
    # Defence in depth: pretend the gate passed it; DuckDB's own settings must still refuse.
    with sandbox.session() as cur, pytest.raises(QueryRejected) as caught:
        sandbox.run(cur, CheckedSql(sql))
    assert caught.value.reason == reason
    assert "root:" not in caught.value.detail
    assert "Traceback" not in caught.value.detail
    assert not Path("/tmp/k2-sandbox-x.csv").exists()
    assert not Path("/tmp/k2-sandbox-x.db").exists()
    assert sandbox.settings_report()["memory_limit"] == "244.1 MiB"
    _still_answers(sandbox)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'read_csv' AS f WHERE 'read_csv(x)' LIKE 'read%'",
        'SELECT 1 AS "read_csv"',
        "SELECT read_text FROM (SELECT 1 AS read_text)",
        "SELECT 'https://example.com/x.parquet' AS url",
        "SELECT * FROM range(3)",
        "SELECT * FROM generate_series(1, 3), unnest([1, 2])",
        "WITH x AS (SELECT 1 AS a) SELECT * FROM x",
        "FROM range(3) t(x) SELECT x * 2",
        "VALUES (1, 'a'), (2, 'b')",
        "DESCRIBE SELECT 1 AS a",
        "SUMMARIZE SELECT * FROM range(10)",
        "SELECT 'é✓ 東京 😀' AS s",
        "SELECT 1 -- a trailing comment",
        "SELECT 1;",
    ],
)
def test_plain_selects_pass_the_gate_and_run(sandbox: Sandbox, sql: str) -> None:
    checked = sandbox.check(sql)
    assert isinstance(checked, CheckedSql)
    with sandbox.session() as cur:
        table, truncated = sandbox.run(cur, checked)
    assert table.num_rows >= 1
    assert not truncated


def test_string_literal_naming_a_reader_is_still_a_literal(sandbox: Sandbox) -> None:
    with sandbox.session() as cur:
        table, _ = sandbox.run(cur, "SELECT 'read_csv(''/etc/passwd'')' AS s")
    assert table.to_pylist() == [{"s": "read_csv('/etc/passwd')"}]


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("-- only a comment", "empty"),
        (";", "empty"),
        ("SELEC 1", "parse_error"),
        ("))) garbage ((( ;; DROP", "parse_error"),
        ("✓✓✓ 東京", "parse_error"),
        ("SELECT 1\x00; DROP TABLE x", "parse_error"),
        ("SELECT ?, $name", "parse_error"),
        ("SELECT " + "1 + " * 900 + "1", "too_complex"),
        ("SELECT " + "1 + " * 2000 + "1", "parse_error"),  # DuckDB's own expression depth limit
        ("SELECT 1 AS x" + " " * 10_000, "too_long"),
    ],
)
def test_bad_text_is_refused_with_a_reason(sandbox: Sandbox, sql: str, reason: str) -> None:
    assert _refused(sandbox, sql).reason == reason


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=300))
def test_check_of_any_text_returns_or_refuses(sandbox: Sandbox, text: str) -> None:
    try:
        assert isinstance(sandbox.check(text), CheckedSql)
    except QueryRejected as exc:
        assert exc.reason


_TOKENS = st.sampled_from(
    [
        "SELECT", "FROM", "WHERE", "WITH", "AS", "(", ")", ",", ";", "*", "'", '"', "x", "1", "--",
        "/*", "*/", "read_csv", "range(3)", "'/etc/passwd'", "getenv", "PRAGMA", "COPY", "TO",
        "DESCRIBE", "SHOW", "main.", "LATERAL", "->", "$1", "?", "\n", "é", "UNION", "VALUES",
    ]
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_TOKENS, max_size=25).map(" ".join))
def test_check_of_sql_like_text_returns_or_refuses(sandbox: Sandbox, text: str) -> None:
    try:
        checked = sandbox.check(text)
    except QueryRejected as exc:
        assert exc.reason
    else:
        assert checked.strip() in text  # what runs is what was sent, never a rewrite


def test_cross_join_bomb_times_out_and_sandbox_recovers(sandbox: Sandbox) -> None:
    # A million-row build side fits in memory; the 10^12 pairs do not fit in any time limit.
    started = time.monotonic()
    with sandbox.session() as cur, pytest.raises(QueryTimeout) as caught:
        sandbox.run(cur, "SELECT count(*) FROM range(1000000) a, range(1000000) b", timeout_s=0.5)
    assert caught.value.seconds == 0.5
    assert time.monotonic() - started < 5
    _still_answers(sandbox)


def test_big_cross_join_bomb_is_stopped_by_the_first_limit_it_hits(sandbox: Sandbox) -> None:
    # Its 10^8-row build side needs ~800 MB: the memory limit (256 MB here) may stop it before the timer.
    started = time.monotonic()
    with sandbox.session() as cur, pytest.raises((QueryTimeout, QueryRejected)) as caught:
        sandbox.run(cur, "SELECT count(*) FROM range(100000000) a, range(100000000) b", timeout_s=0.5)
    if isinstance(caught.value, QueryRejected):
        assert caught.value.reason == "out_of_memory"
    assert time.monotonic() - started < 5
    _still_answers(sandbox)


def test_timeout_while_streaming_rows(sandbox: Sandbox) -> None:
    # Rows are rare, so the time is spent between batches, inside the Arrow reader.
    sql = "SELECT x FROM range(100000000000) t(x) WHERE x % 1000000007 = 3"
    with sandbox.session() as cur, pytest.raises(QueryTimeout):
        sandbox.run(cur, sql, max_rows=10, timeout_s=0.5)
    _still_answers(sandbox)


def test_huge_result_is_truncated_at_max_rows(sandbox: Sandbox) -> None:
    started = time.monotonic()
    with sandbox.session() as cur:
        table, truncated = sandbox.run(cur, "SELECT * FROM range(1000000000000) t(x)", max_rows=100)
    assert table.num_rows == 100
    assert table.column("x").to_pylist() == list(range(100))
    assert truncated
    assert time.monotonic() - started < 5  # streamed: the trillion rows were never made


def test_result_of_exactly_max_rows_is_not_truncated(sandbox: Sandbox) -> None:
    with sandbox.session() as cur:
        table, truncated = sandbox.run(cur, "SELECT * FROM range(100)", max_rows=100)
    assert (table.num_rows, truncated) == (100, False)


def test_max_rows_defaults_to_settings(sandbox: Sandbox) -> None:
    with sandbox.session() as cur:
        table, truncated = sandbox.run(cur, "SELECT * FROM range(5000)")
    assert (table.num_rows, truncated) == (_SETTINGS.max_rows, True)


def test_empty_result_keeps_its_columns(sandbox: Sandbox) -> None:
    with sandbox.session() as cur:
        table, truncated = sandbox.run(cur, "SELECT 1 AS a, 'x' AS b WHERE false")
    assert table.num_rows == 0
    assert table.schema.names == ["a", "b"]
    assert not truncated


def test_parameters_are_bound(sandbox: Sandbox) -> None:
    with sandbox.session() as cur:
        table, _ = sandbox.run(cur, "SELECT ? + 1 AS x, ? AS sym", params=[41, "BHP"])
    assert table.to_pylist() == [{"x": 42, "sym": "BHP"}]


def test_duckdb_errors_become_rejections_with_duckdbs_message(sandbox: Sandbox) -> None:
    with sandbox.session() as cur:
        with pytest.raises(QueryRejected) as unknown:
            sandbox.run(cur, "SELECT no_such_column FROM range(3)")
        with pytest.raises(QueryRejected) as missing:
            sandbox.run(cur, "SELECT * FROM no_such_table")
        with pytest.raises(QueryRejected) as midstream:
            sandbox.run(cur, "SELECT CASE WHEN x = 50000 THEN error('boom') END FROM range(100000) t(x)")
    assert unknown.value.reason == "sql_error"
    assert "no_such_column" in unknown.value.detail
    assert missing.value.reason == "sql_error"
    assert "no_such_table" in missing.value.detail
    assert midstream.value.reason == "sql_error"
    assert "boom" in midstream.value.detail
    _still_answers(sandbox)


class _FailingCursor:
    """Stands in for a cursor on which DuckDB hits an internal error (they carry a C++ stack trace)."""

    def execute(self, sql: str, params: object = None) -> None:
        raise duckdb.InternalException(
            "INTERNAL Error: statement type mismatch\n\nStack Trace:\n/opt/venv/lib/_duckdb.so(+0x1) [0x7f]"
        )

    def interrupt(self) -> None:
        pass


def test_internal_errors_lose_their_stack_trace(sandbox: Sandbox) -> None:
    with pytest.raises(QueryRejected) as caught:
        sandbox.run(_FailingCursor(), "SELECT 1")  # type: ignore[arg-type]
    assert caught.value.reason == "internal_error"
    assert caught.value.detail == "INTERNAL Error: statement type mismatch"


def test_out_of_memory_is_a_rejection() -> None:
    with Sandbox(_SETTINGS.model_copy(update={"duckdb_memory_limit": "64MB"})) as small:
        with small.session() as cur, pytest.raises(QueryRejected) as caught:
            small.run(cur, "SELECT string_agg(repeat('x', 1000), ',') FROM range(200000)")
        assert caught.value.reason == "out_of_memory"
        assert "temp_directory" not in caught.value.detail  # DuckDB's advice is for operators
        _still_answers(small)


def test_registered_arrow_table_and_parquet_dataset_are_queryable(sandbox: Sandbox, tmp_path: Path) -> None:
    # The engine's data path: pyarrow reads the files, DuckDB (no file access) scans the Arrow.
    first = pa.table({"sym": ["BHP", "CBA", "BHP"], "price": [45.1, 101.5, 45.3]})
    pq.write_table(first, tmp_path / "a.parquet")
    pq.write_table(pa.table({"sym": ["BHP"], "price": [45.2]}), tmp_path / "b.parquet")
    quotes = pa.table({"sym": ["BHP", "CBA"], "bid": [45.0, 101.0]})
    with sandbox.session() as cur:
        cur.register("trades", ds.dataset(str(tmp_path), format="parquet"))
        cur.register("quotes", quotes)
        table, _ = sandbox.run(
            cur,
            "SELECT t.sym, count(*) AS n, round(max(t.price - q.bid), 2) AS edge "
            "FROM trades t JOIN quotes q USING (sym) GROUP BY t.sym ORDER BY t.sym",
        )
    assert sandbox.settings_report()["enable_external_access"] == "false"
    assert table.to_pylist() == [{"sym": "BHP", "n": 3, "edge": 0.3}, {"sym": "CBA", "n": 1, "edge": 0.5}]


def test_engine_temp_views_are_per_session(sandbox: Sandbox) -> None:
    # The engine's pattern: register the parts, build a temp view, run user SQL over it.
    with sandbox.session() as first, sandbox.session() as second:
        for cur, price in ((first, 1.0), (second, 2.0)):
            cur.register("trades__history", pa.table({"price": [price]}))
            cur.register("trades__live", pa.table({"price": [price * 10]}))
            cur.execute(
                "CREATE OR REPLACE TEMP VIEW trades AS "
                "SELECT * FROM trades__history UNION ALL BY NAME SELECT * FROM trades__live"
            )
        one, _ = sandbox.run(first, "SELECT sum(price) AS total FROM trades")
        two, _ = sandbox.run(second, "SELECT sum(price) AS total FROM trades")
    assert (one.to_pylist(), two.to_pylist()) == ([{"total": 11.0}], [{"total": 22.0}])
    with sandbox.session() as cur, pytest.raises(QueryRejected):
        sandbox.run(cur, "SELECT * FROM trades")


def test_registrations_end_with_the_session(sandbox: Sandbox) -> None:
    with sandbox.session() as cur:
        cur.register("trades", pa.table({"x": [1]}))
        assert sandbox.run(cur, "SELECT count(*) AS n FROM trades")[0].to_pylist() == [{"n": 1}]
    with sandbox.session() as cur, pytest.raises(QueryRejected) as caught:
        sandbox.run(cur, "SELECT * FROM trades")
    assert caught.value.reason == "sql_error"


def test_concurrent_sessions_see_only_their_own_registrations(sandbox: Sandbox) -> None:
    workers = 4
    barrier = threading.Barrier(workers)
    answers: dict[int, list[dict[str, int]]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with sandbox.session() as cur:
                cur.register("trades", pa.table({"size": [i] * (i + 1)}))
                barrier.wait(timeout=10)  # every session has registered its own "trades"
                table, _ = sandbox.run(cur, "SELECT count(*) AS n, sum(size) AS total FROM trades")
                barrier.wait(timeout=10)
                answers[i] = table.to_pylist()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert answers == {i: [{"n": i + 1, "total": i * (i + 1)}] for i in range(workers)}


def test_python_variables_are_not_scanned(sandbox: Sandbox) -> None:
    # DuckDB's Python client would otherwise find a local variable by name (a replacement scan).
    secret_rows = pa.table({"password": ["hunter2"]})
    with sandbox.session() as cur, pytest.raises(QueryRejected) as caught:
        sandbox.run(cur, "SELECT * FROM secret_rows")
    assert caught.value.reason == "sql_error"
    assert "hunter2" not in caught.value.detail
    assert secret_rows.num_rows == 1


def test_settings_are_read_back(sandbox: Sandbox) -> None:
    report = sandbox.settings_report()
    assert report["enable_external_access"] == "false"
    assert report["lock_configuration"] == "true"
    assert report["autoload_known_extensions"] == "false"
    assert report["autoinstall_known_extensions"] == "false"
    assert report["allow_community_extensions"] == "false"
    assert report["allow_unsigned_extensions"] == "false"
    assert report["python_enable_replacements"] == "false"
    assert report["temp_directory"] == ""
    assert report["disabled_filesystems"] == "LocalFileSystem"
    assert report["memory_limit"] == "244.1 MiB"  # 256 MB, as DuckDB prints it
    assert report["threads"] == "2"
    assert report["duckdb_version"] == duckdb.__version__


def test_the_report_is_a_copy(sandbox: Sandbox) -> None:
    sandbox.settings_report()["enable_external_access"] = "true"
    assert sandbox.settings_report()["enable_external_access"] == "false"


def test_a_memory_limit_duckdb_cannot_read_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Sandbox(_SETTINGS.model_copy(update={"duckdb_memory_limit": "lots"}))
