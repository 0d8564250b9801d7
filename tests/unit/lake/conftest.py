"""A real SqlCatalog (SQLite in tmp_path) for the lake tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

from k2.config import IcebergSettings
from k2.lake import open_catalog


@pytest.fixture
def cfg(tmp_path: Path) -> IcebergSettings:
    return IcebergSettings(warehouse=str(tmp_path / "wh"))


@pytest.fixture
def catalog(cfg: IcebergSettings) -> Iterator[Catalog]:
    cat = open_catalog(cfg)
    yield cat
    cat.engine.dispose()  # type: ignore[attr-defined]
