"""The rules every view of a run shares: whether it passed, and its counts.

`xrun run`'s exit code, `xrun report merge`, the GitHub step summary, the HTML page and the console
used to derive these each on their own, and disagreed (a build found not reproducible failed the
run but the summary said "passed"; the console counted not-runnable cells as ok). They all call
these two functions now, over the report's dict form (a RunResult gives the same dict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def summary(builds: Sequence[Mapping[str, Any]], cells: Sequence[Mapping[str, Any]],
            planned_cells: int) -> dict[str, Any]:
    """The report's counts: a not-runnable cell is neither ok nor failed (its build failed)."""
    xf = sum(1 for c in cells if c.get("xfail") and c.get("passed"))
    nr = sum(1 for c in cells if c.get("passed") and c.get("verdict") == "not-runnable")
    ok = sum(1 for c in cells if c.get("passed") and not c.get("xfail")) - nr
    return {"cells": len(cells), "ok": ok, "failed": len(cells) - ok - xf - nr, "xfail": xf,
            "not_runnable": nr,
            "builds_failed": sum(1 for b in builds if not build_ok(b)),
            "planned_cells": planned_cells}


def build_ok(b: Mapping[str, Any]) -> bool:
    """A build passed: verdict ok, and not found unreproducible when the matrix asked for it."""
    return b.get("verdict") == "ok" and b.get("reproducible") is not False


def passed(report: Mapping[str, Any]) -> bool:
    """The run passed: not interrupted, every build ok, every planned cell ran and passed."""
    cells = list(report.get("cells") or [])
    planned = int((report.get("summary") or {}).get("planned_cells", len(cells)))
    return (not report.get("interrupted")
            and all(build_ok(b) for b in report.get("builds") or [])
            and all(c.get("passed") for c in cells) and len(cells) == planned)
