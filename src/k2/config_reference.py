"""Render the configuration reference (docs/configuration.md) from the Settings model itself,
so the documentation cannot drift from the code (a unit test compares the two)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from k2.config import Settings

__all__ = ["render_reference"]


def _default(field: Any) -> str:
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{value!s}`" if value not in ("", None) else "`" + repr(value) + "`"


def _rows(prefix: str, model: type[BaseModel]) -> list[str]:
    rows: list[str] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows += _rows(f"{prefix}{name}.", ann)
            continue
        env = "K2_" + "__".join(p.upper() for p in f"{prefix}{name}".split("."))
        typ = getattr(ann, "__name__", str(ann)).replace("typing.", "")
        rows.append(f"| `{prefix}{name}` | `{env}` | {typ} | {_default(field)} |")
    return rows


def render_reference() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `k2.config.Settings` by `k2 config-reference`; do not edit by hand.",
        "Values come from `config/k2.toml` (or `--config FILE`), overridden by environment variables.",
        "Lists and tables in environment variables are JSON, e.g. `K2_INGEST__KNOWN_EXCHANGES='[\"ASX\"]'`.",
        "",
    ]
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        lines += [f"## `[{section}]`", "", (model.__doc__ or "").strip().split("\n\n")[0], ""]
        lines += ["| key | environment | type | default |", "|---|---|---|---|"]
        lines += _rows(f"{section}.", model)
        lines.append("")
    return "\n".join(lines)
