"""A check is a claim the demo tested on this run, with its verdict and the facts behind it.

Pure: the recorder only collects; the story prints and writes. A check is ``passed`` only when a
section measured the claim and it held; a section not built yet records ``skipped``, never a pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Check", "CheckRecorder", "Status"]


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Check:
    section: int
    name: str  # short, stable: tests and the JSON summary key on it
    claim: str  # the sentence a reader checks against
    status: Status
    detail: str = ""  # what was measured, or why it failed / was skipped
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = self.status.value
        return out


class CheckRecorder:
    """Every check of one run, in the order they were made."""

    def __init__(self) -> None:
        self.checks: list[Check] = []

    def record(
        self,
        section: int,
        name: str,
        claim: str,
        ok: bool,
        detail: str = "",
        **facts: Any,
    ) -> Check:
        check = Check(section, name, claim, Status.PASSED if ok else Status.FAILED, detail, facts)
        self.checks.append(check)
        return check

    def skip(self, section: int, name: str, claim: str, reason: str) -> Check:
        check = Check(section, name, claim, Status.SKIPPED, reason)
        self.checks.append(check)
        return check

    def count(self, status: Status) -> int:
        return sum(1 for c in self.checks if c.status is status)

    @property
    def ok(self) -> bool:
        """No check failed (skipped ones do not count against the run)."""
        return self.count(Status.FAILED) == 0

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "passed": self.count(Status.PASSED),
            "failed": self.count(Status.FAILED),
            "skipped": self.count(Status.SKIPPED),
            "checks": [c.to_dict() for c in self.checks],
        }
