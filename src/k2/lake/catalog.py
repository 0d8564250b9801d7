"""Open the Iceberg catalog named by configuration.

The embedded default is a pyiceberg ``SqlCatalog`` on SQLite with a local warehouse folder; a
PostgreSQL URI or ``type = "rest"`` (plus S3 properties) gives a shared catalog for several hosts.
Everything above this module sees only ``pyiceberg.catalog.Catalog``: same code path either way.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.catalog.sql import SqlCatalog
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from k2.config import IcebergSettings

__all__ = ["open_catalog", "warehouse_path"]

SQLITE_BUSY_TIMEOUT_MS = 30_000


def warehouse_path(cfg: IcebergSettings) -> Path:
    return Path(cfg.warehouse).expanduser().resolve()


def open_catalog(cfg: IcebergSettings) -> Catalog:
    if cfg.type == "rest":
        props: dict[str, Any] = {"type": "rest", "uri": cfg.uri, **cfg.properties}
        if cfg.warehouse:
            props["warehouse"] = cfg.warehouse
        return load_catalog(cfg.catalog_name, **props)
    uri = cfg.uri
    warehouse = cfg.properties.get("warehouse", "")
    if not warehouse:
        local = warehouse_path(cfg)
        local.mkdir(parents=True, exist_ok=True)
        warehouse = local.as_uri()
        uri = uri or f"sqlite:///{local / 'catalog.db'}"
    extra = {k: v for k, v in cfg.properties.items() if k != "warehouse"}
    catalog = _sql_catalog(cfg.catalog_name, uri, warehouse, extra)
    if uri.startswith("sqlite"):
        _tune_sqlite(catalog)
    return catalog


def _sql_catalog(name: str, uri: str, warehouse: str, extra: dict[str, Any], attempts: int = 5) -> SqlCatalog:
    """``SqlCatalog`` creates its own tables on first use, without a lock: ingest processes
    starting together on a fresh SQLite file can lose that race ("table already exists",
    "database is locked"). The loser retries and then finds the tables there."""
    for attempt in range(1, attempts + 1):
        try:
            return SqlCatalog(name, uri=uri, warehouse=warehouse, **extra)
        except OperationalError:
            if attempt == attempts:
                raise
            time.sleep(0.1 * attempt)
    raise AssertionError("unreachable")


def _tune_sqlite(catalog: SqlCatalog) -> None:
    """WAL lets readers (the API, tests) scan while ingest commits; the busy timeout makes a
    concurrent commit wait for the lock instead of failing at once."""

    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    event.listen(catalog.engine, "connect", _on_connect)
    catalog.engine.dispose()  # connections made before the listener existed lack the pragmas
