"""A self-contained HTML page from the report dict: totals, builds, the verdict grid, each cell's evidence."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .. import model
from ..paths import write_text_atomic
from .junit import exit_status_text

TEMPLATE = "report.html.j2"

# Colour families, the same ones the console grid uses, so a reader moving between them is not misled.
@dataclass(frozen=True)
class CellView:
    """One grid square and its evidence card."""

    n: int
    cell: Mapping[str, Any]
    label: str
    css: str
    passed: bool
    status: str | None


def category(verdict: str, passed: bool, xfail: str | None) -> str:
    """The colour family of a verdict; an xfail that held is its own (teal), any other miss is red at least."""
    if xfail and passed:
        return "xfail"
    v = model.Verdicts.get(verdict)
    cat = v.category if v else "fail"
    # an unexpected ok of an xfail cell fails the run, so it must not look green
    return "fail" if cat == "ok" and not passed else cat


def _cell_view(n: int, c: Mapping[str, Any]) -> CellView:
    verdict, passed, xfail = str(c["verdict"]), bool(c.get("passed")), c.get("xfail")
    label = "xfail" if xfail and passed else verdict
    return CellView(n, c, label, category(verdict, passed, xfail), passed, exit_status_text(c))


def _environment() -> jinja2.Environment:
    # FileSystemLoader next to this module: works from a checkout, an editable install and a wheel,
    # as long as runner/output/templates/ is shipped as package data
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).with_name("templates")),
        autoescape=True,  # select_autoescape() would not match the ".html.j2" suffix
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def to_html(report: Mapping[str, Any]) -> str:
    """The report as one HTML page with inline CSS and JS and no external references."""
    cells = [_cell_view(i, c) for i, c in enumerate(report.get("cells") or [])]
    builds = list(report.get("builds") or [])
    targets = list(dict.fromkeys([*(str(b["target"]) for b in builds), *(str(v.cell["target"]) for v in cells)]))
    # targets that have a build but no cells at all (e.g. an interrupted run) would be an empty row
    with_cells = {str(v.cell["target"]) for v in cells}
    rows = [t for t in targets if t in with_cells]
    # (image, profile) pairs in the order the plan produced them; a tuple, since names may hold ':'
    cols = list(dict.fromkeys((str(v.cell["image"]), str(v.cell["profile"])) for v in cells))
    grid = {(str(v.cell["target"]), str(v.cell["image"]), str(v.cell["profile"])): v for v in cells}
    summary = dict(report.get("summary") or {})
    failed_builds = [b for b in builds if not model.build_ok(b)]
    passed = model.passed(report)
    return _environment().get_template(TEMPLATE).render(
        report=report, summary=summary, builds=builds, failed_builds=failed_builds, cells=cells,
        rows=rows, cols=cols, grid=grid, passed=passed, category=category,
        problems=[v for v in cells if not v.passed])


def write_html(report: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the report as one HTML page to `path`."""
    write_text_atomic(path, to_html(report))
