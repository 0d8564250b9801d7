"""The generated docs in the repo match the code that generates them."""

from __future__ import annotations

import json
from pathlib import Path

from k2.config_reference import render_reference
from k2.wire import STREAMS, json_schema

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_configuration_reference_is_current() -> None:
    assert (DOCS / "configuration.md").read_text() == render_reference(), "run: k2 config-reference"


def test_wire_json_schemas_are_current() -> None:
    for stream in STREAMS:
        stored = json.loads((DOCS / "schema" / f"{stream}.schema.json").read_text())
        assert stored == json_schema(stream), "run: k2 schema"
