"""The sandbox user SQL runs in: one locked-down in-memory DuckDB, a gate in front, limits around.

Data reaches DuckDB only as Arrow objects (``pyarrow.Table``, ``pyarrow.dataset.Dataset`` over the
Parquet files Iceberg planned) that the engine registers on a session cursor; pyarrow reads those
files, DuckDB never opens one. So DuckDB is given no access to anything outside its own memory,
and three independent layers keep it that way:

1. **Settings, locked and read back.** ``enable_external_access=false`` (no file, network or
   extension install), ``disabled_filesystems=LocalFileSystem``, no extension autoload/autoinstall,
   no community or unsigned extensions, no persistent secrets, no Python replacement scans (a bare
   ``FROM name`` would otherwise find a Python variable of that name in the caller's frames), no
   temp directory (out of memory is an error, never a spill to disk), then
   ``lock_configuration=true``. Every setting is read back at start-up and any difference raises
   ``ConfigError``. DuckDB 1.5.5 reads ``disabled_filesystems`` back as ``''`` whatever it holds, so
   that one is verified by behaviour instead: a ``glob('/')`` probe must be refused.
2. **The gate** (``check``) on every user statement: a length cap, DuckDB's own parser, exactly one
   statement, of type SELECT, and the text DuckDB will run must be the text the user sent (DuckDB
   rewrites ``PRAGMA x`` into ``SELECT * FROM pragma_x()`` and reports it as a SELECT). The
   statement is then turned into DuckDB's own AST (``json_serialize_sql``, the same parser) and
   every node is walked, so quoting, case, schema qualification and method-call syntax
   (``x.read_text()``) cannot hide a name, while a string literal ``'read_csv'`` stays a literal:

   - table functions are **allowed by name** (``range``, ``generate_series``, ``unnest``): the
     readers, ``glob``, metadata (``duckdb_*``, ``pragma_*``, ``parquet_*``), dynamic SQL
     (``query``, ``json_execute_serialized_sql``) and ``arrow_scan`` (takes a raw pointer) are all
     table functions, and a reader added by a future DuckDB is refused without anyone noticing it;
   - scalar, aggregate and window functions are hundreds and pure, so they are **denied by name**:
     those that reveal the host or its settings (``getenv``, ``current_setting``), run SQL, write
     logs or sleep, and any reader-like prefix (``read_``, ``parquet_``, ``duckdb_``...);
   - a table reference must be a plain name (no path, URL or dot: ``FROM '/etc/passwd'`` is a
     replacement scan on a file), outside the system schemas and catalog views;
   - ``DESCRIBE``/``SUMMARIZE`` of a query or table are allowed, ``SHOW TABLES`` and friends not.

3. **Limits** (``run``): a per-request cursor, so one request's registrations are invisible to
   another's; at most ``max_rows`` rows fetched from a streaming result (``truncated`` says there
   were more); a timer that interrupts the query at ``timeout_s``; DuckDB's memory limit and thread
   count. DuckDB's errors become ``QueryRejected`` with DuckDB's message and a short reason, and an
   interrupted query ``QueryTimeout``.

Invariants: only a single SELECT checked by the gate reaches ``run`` as user SQL; nothing in the
sandbox can read or write a file, the network, an extension or a setting; the sandbox answers the
next query after any refusal, error or timeout. ``run`` puts any text that is not a ``CheckedSql``
through the gate, the engine's own generated SELECTs included; only the engine's direct cursor calls
(``register``, ``CREATE TEMP VIEW`` over what it registered) are trusted and bypass it. Temp views
and registrations live in the session cursor's own temp catalog and vanish when it closes.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import duckdb
import pyarrow as pa

from k2.config import ApiSettings
from k2.errors import ConfigError, QueryRejected, QueryTimeout

__all__ = ["CheckedSql", "Sandbox"]


class CheckedSql(str):
    """A single SELECT statement that passed ``Sandbox.check``; ``run`` checks any other text."""

    __slots__ = ()


_ConfigValue = str | bool | int | float | list[str]
# Applied at connect time, before the database serves anything.
_CONNECT_CONFIG: dict[str, _ConfigValue] = {
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    "allow_persistent_secrets": False,
    "python_enable_replacements": False,
    "python_scan_all_frames": False,
    "enable_external_file_cache": False,
    "temp_directory": "",
    "max_temp_directory_size": "0B",
}
# Set after connect, in this order: DuckDB refuses ``disabled_filesystems`` before start-up, and once
# external access is off it refuses to change ``temp_directory``, so these come last.
_LATE_SETTINGS: tuple[tuple[str, str], ...] = (
    ("disabled_filesystems", "'LocalFileSystem'"),
    ("enable_external_access", "false"),
    ("lock_configuration", "true"),
)
# What each setting must read back as (``memory_limit`` and ``threads`` come from ApiSettings).
_EXPECTED: dict[str, str] = {
    "enable_external_access": "false",
    "autoload_known_extensions": "false",
    "autoinstall_known_extensions": "false",
    "allow_community_extensions": "false",
    "allow_unsigned_extensions": "false",
    "allow_persistent_secrets": "false",
    "python_enable_replacements": "false",
    "python_scan_all_frames": "false",
    "enable_external_file_cache": "false",
    "temp_directory": "",
    "max_temp_directory_size": "0 bytes",
    "allowed_directories": "[]",
    "allowed_paths": "[]",
    "allowed_configs": "[]",
    "lock_configuration": "true",
}

_ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
_DENIED_FUNCTIONS = frozenset(
    {
        "getenv",
        "current_setting",
        "getvariable",
        "set_variable",
        "write_log",
        "sleep_ms",
        "pg_sleep",
        "query",
        "query_table",
        "json_execute_serialized_sql",
        "glob",
        "sniff_csv",
        "which_secret",
        "checkpoint",
        "force_checkpoint",
        "enable_logging",
        "disable_logging",
        "truncate_duckdb_logs",
        "enable_profiling",
        "disable_profiling",
    }
)
_DENIED_PREFIXES = (
    "read_",
    "parquet_",
    "iceberg_",
    "delta_",
    "duckdb_",
    "pragma_",
    "sqlite_",
    "http",
    "s3",
)
_DENIED_TABLE_PREFIXES = ("duckdb_", "pragma_", "sqlite_", "pg_")
_ALLOWED_QUALIFIERS = frozenset({"", "main", "temp", "memory"})
_PLAIN_NAME = re.compile(r"\w+")
_MAX_BATCH_ROWS = 1_000_000


class Sandbox:
    """One in-memory DuckDB database for user SQL, locked down at construction.

    Raises:
        ConfigError: a setting did not take (read back differently) or the file-access probe was
            not refused.
    """

    def __init__(self, settings: ApiSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        config: dict[str, _ConfigValue] = {
            **_CONNECT_CONFIG,
            "memory_limit": settings.duckdb_memory_limit,
            "threads": settings.duckdb_threads,
        }
        try:
            self._db = duckdb.connect(":memory:", config=config)
        except duckdb.Error as exc:
            raise ConfigError(f"cannot start the SQL sandbox: {exc}") from exc
        try:
            for name, value in _LATE_SETTINGS:
                self._db.execute(f"SET {name} = {value}")
            self._report = self._verify()
        except BaseException:
            self._db.close()
            raise

    def settings_report(self) -> dict[str, str]:
        """The sandbox settings as DuckDB reported them at start-up (for ``/v1/status``)."""
        return dict(self._report)

    def check(self, sql: str) -> CheckedSql:
        """The gate: return the single SELECT statement in ``sql``, or refuse it.

        Raises:
            QueryRejected: reason ``too_long``, ``empty``, ``parse_error``, ``too_complex``,
                ``multiple_statements``, ``not_select``, ``forbidden_function``, ``forbidden_table``
                or ``permission`` (``IMPORT DATABASE``, which DuckDB expands while parsing).
        """
        limit = self._settings.max_sql_chars
        if len(sql) > limit:
            raise QueryRejected("too_long", f"{len(sql)} characters; the limit is {limit}")
        if "\x00" in sql:
            raise QueryRejected("parse_error", "the text contains a NUL character")
        try:
            sql.encode("utf-8")
        except UnicodeEncodeError:
            raise QueryRejected("parse_error", "the text is not valid Unicode") from None
        with self._cursor() as cur:
            try:
                # Not only a parse: DuckDB expands PRAGMA and IMPORT DATABASE here, and IMPORT reads
                # files. On this cursor that is refused (reason ``permission``).
                statements = cur.extract_statements(sql)
            except duckdb.Error as exc:
                raise _rejected(exc, default="parse_error") from None
            if not statements:
                raise QueryRejected("empty", "no SQL statement")
            if len(statements) > 1:
                raise QueryRejected("multiple_statements", f"{len(statements)} statements; send one")
            statement = statements[0]
            if statement.type != duckdb.StatementType.SELECT:
                raise QueryRejected("not_select", f"only SELECT is allowed, not {statement.type.name}")
            text = statement.query
            if not text.strip() or text.strip() not in sql:
                # DuckDB rewrote the statement (PRAGMA -> SELECT FROM pragma_x()): not the user's text.
                raise QueryRejected("not_select", "only SELECT is allowed, not PRAGMA")
            _check_tree(_syntax_tree(cur, text))
        return CheckedSql(text)

    @contextmanager
    def session(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own for one request: Arrow objects registered on it are seen by it alone."""
        with self._cursor() as cur:
            yield cur

    def run(
        self,
        cur: duckdb.DuckDBPyConnection,
        sql: str,
        *,
        max_rows: int | None = None,
        timeout_s: float | None = None,
        params: list[Any] | None = None,
    ) -> tuple[pa.Table, bool]:
        """Run one user SELECT on a session cursor: at most ``max_rows`` rows, and whether there were more.

        Text that is not a ``CheckedSql`` is put through ``check`` first. Limits default to the
        sandbox settings (``max_rows``, ``sql_timeout_s``).

        Raises:
            QueryRejected: the gate refused it, or DuckDB did (reason ``sql_error``, ``permission``,
                ``out_of_memory``, ``interrupted``, ``internal_error``); ``detail`` is DuckDB's
                message, without any stack trace.
            QueryTimeout: it ran past ``timeout_s`` and was interrupted.
        """
        checked = sql if isinstance(sql, CheckedSql) else self.check(sql)
        limit = self._settings.max_rows if max_rows is None else max_rows
        seconds = self._settings.sql_timeout_s if timeout_s is None else timeout_s
        timed_out = threading.Event()

        def interrupt() -> None:
            timed_out.set()
            cur.interrupt()

        timer = threading.Timer(seconds, interrupt)
        timer.daemon = True
        timer.start()
        try:
            return _fetch(cur, checked, limit, params)
        except (duckdb.Error, OSError, pa.ArrowException) as exc:
            # Errors raised while streaming come through pyarrow as OSError carrying DuckDB's message.
            if timed_out.is_set():
                raise QueryTimeout(seconds) from None
            raise _rejected(exc) from None
        finally:
            timer.cancel()
            timer.join()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            cur = self._db.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def _verify(self) -> dict[str, str]:
        rows = self._db.execute("SELECT name, value FROM duckdb_settings()").fetchall()
        actual = {str(name): "" if value is None else str(value) for name, value in rows}
        wanted = {**_EXPECTED, "threads": str(self._settings.duckdb_threads)}
        wrong = [name for name, value in wanted.items() if actual.get(name) != value]
        if not _same_size(self._settings.duckdb_memory_limit, actual.get("memory_limit", "")):
            wrong.append("memory_limit")
            wanted["memory_limit"] = self._settings.duckdb_memory_limit
        if wrong:
            detail = ", ".join(f"{name}={actual.get(name)!r} (wanted {wanted[name]!r})" for name in wrong)
            raise ConfigError(f"the SQL sandbox settings did not take: {detail}")
        report = {name: actual[name] for name in sorted(wanted)}
        report["memory_limit"] = actual["memory_limit"]
        report["disabled_filesystems"] = self._probe_local_files()
        report["duckdb_version"] = duckdb.__version__
        return report

    def _probe_local_files(self) -> str:
        # disabled_filesystems reads back as '' in DuckDB 1.5.5, so prove it by trying: listing
        # the root directory must fail, and fail because the local file system is switched off.
        try:
            self._db.execute("SELECT count(*) FROM glob('/')").fetchall()
        except duckdb.PermissionException as exc:
            if "LocalFileSystem" in str(exc):
                return "LocalFileSystem"
            raise ConfigError(f"disabled_filesystems did not take; the probe said: {exc}") from exc
        raise ConfigError("the SQL sandbox can list local files")


def _fetch(
    cur: duckdb.DuckDBPyConnection, sql: str, max_rows: int, params: list[Any] | None
) -> tuple[pa.Table, bool]:
    cur.execute(sql, params)
    reader = cur.to_arrow_reader(min(max_rows + 1, _MAX_BATCH_ROWS))
    batches: list[pa.RecordBatch] = []
    rows = 0
    try:
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows > max_rows:
                break
    finally:
        reader.close()
    table = pa.Table.from_batches(batches, schema=reader.schema)
    return table.slice(0, max_rows), rows > max_rows


def _syntax_tree(cur: duckdb.DuckDBPyConnection, text: str) -> Any:
    row = cur.execute("SELECT json_serialize_sql(?)", [text]).fetchone()
    try:
        tree = json.loads(row[0]) if row else {"error": True}
    except RecursionError:
        raise QueryRejected("too_complex", "the statement is nested too deeply") from None
    if tree.get("error"):
        raise QueryRejected("parse_error", str(tree.get("error_message", "DuckDB could not parse it")))
    return tree["statements"]


def _check_tree(tree: Any) -> None:
    # Iterative: a deeply nested statement must not exhaust Python's stack.
    pending = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        if "function_name" in node:
            _check_function(node)
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            name = str(function.get("function_name", "")).lower()
            if name not in _ALLOWED_TABLE_FUNCTIONS:
                raise QueryRejected(
                    "forbidden_function",
                    f"table function {name}() is not allowed; "
                    f"allowed: {', '.join(sorted(_ALLOWED_TABLE_FUNCTIONS))}",
                )
        elif kind == "BASE_TABLE":
            _check_table(node)
        elif kind == "SHOW_REF" and node.get("table_name"):
            raise QueryRejected("forbidden_table", "SHOW is not allowed; DESCRIBE or SUMMARIZE a table")
        pending.extend(value for value in node.values() if isinstance(value, (dict, list)))


def _check_function(node: dict[str, Any]) -> None:
    name = str(node["function_name"]).lower()
    qualifier = (str(node.get("catalog", "")).lower(), str(node.get("schema", "")).lower())
    if name in _DENIED_FUNCTIONS or name.startswith(_DENIED_PREFIXES):
        raise QueryRejected("forbidden_function", f"function {name}() is not allowed")
    if not set(qualifier) <= _ALLOWED_QUALIFIERS:
        raise QueryRejected("forbidden_function", f"function {'.'.join(qualifier)}.{name}() is not allowed")


def _check_table(node: dict[str, Any]) -> None:
    name = str(node.get("table_name", ""))
    qualifiers = {str(node.get("catalog_name", "")).lower(), str(node.get("schema_name", "")).lower()}
    if not _PLAIN_NAME.fullmatch(name):
        raise QueryRejected("forbidden_table", f"{name!r} is not a table name; files and URLs cannot be read")
    if name.lower().startswith(_DENIED_TABLE_PREFIXES) or not qualifiers <= _ALLOWED_QUALIFIERS:
        raise QueryRejected("forbidden_table", f"system table {name} is not available")


_REASONS = (
    (duckdb.InterruptException, "INTERRUPT Error", "interrupted"),
    (duckdb.OutOfMemoryException, "Out of Memory Error", "out_of_memory"),
    (duckdb.PermissionException, "Permission Error", "permission"),
    (duckdb.InternalException, "INTERNAL Error", "internal_error"),
    (duckdb.FatalException, "FATAL Error", "internal_error"),
)


def _rejected(exc: BaseException, default: str = "sql_error") -> QueryRejected:
    # While streaming, DuckDB's errors arrive through pyarrow as OSError: the message still says which.
    # DuckDB appends a C++ stack trace (library paths) to internal errors: a client needs none of it.
    message = str(exc).split("Stack Trace:", 1)[0].strip()
    for cls, prefix, reason in _REASONS:
        if isinstance(exc, cls) or message.startswith(prefix):
            if reason != "permission":
                # Past the first line DuckDB gives advice for operators ("SET temp_directory=...").
                message = message.splitlines()[0]
            return QueryRejected(reason, message)
    return QueryRejected(default, message)


def _same_size(wanted: str, reported: str) -> bool:
    # DuckDB reports sizes in binary units truncated to one decimal ("1GB" reads back "953.6 MiB").
    want, _ = _size(wanted)
    got, unit = _size(reported)
    return want is not None and got is not None and abs(want - got) <= 0.1 * unit + 1


_UNITS = {
    "b": 1,
    "byte": 1,
    "bytes": 1,
    **{f"{p}{s}": 1000**i for i, p in enumerate("kmgt", 1) for s in ("", "b")},
    **{f"{w}byte{s}": 1000**i for i, w in enumerate(("kilo", "mega", "giga", "tera"), 1) for s in ("", "s")},
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")


def _size(text: str) -> tuple[float | None, int]:
    match = _SIZE.fullmatch(text)
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        return None, 1
    return float(match.group(1)) * unit, unit
