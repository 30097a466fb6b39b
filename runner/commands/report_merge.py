"""`xrun report merge SHARD.json... --json OUT [--junit OUT] [--html OUT]`: runner/merge.py as a command;
0 passed, 1 failed, 2 bad input (exactly the exit code an unsharded `xrun run` would have had)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, XarchError
from ..output.text import plain
from . import Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser("report", plain_errors=True, help="JSON reports of earlier runs: "
                                                "merge the shards' reports", description="Work with JSON reports of "
                                                "earlier runs.")
    rsub = p.add_subparsers(dest="report_cmd", required=True)
    m = rsub.add_parser("merge", plain_errors=True, help="join the reports of `xrun run --shard I/N` jobs into one")
    m.add_argument("reports", nargs="+", metavar="SHARD.json")
    m.add_argument("--json", required=True, metavar="PATH", help="write the merged JSON report here")
    m.add_argument("--junit", metavar="PATH", help="write a JUnit XML report here")
    m.add_argument("--html", metavar="PATH", help="write a self-contained HTML grid here")
    m.add_argument("--matrix", metavar="PATH",
                   help="the matrix the shards ran (default: the reports' own, if it is here): "
                        "restores plan order and puts annotations on the target's line")
    m.add_argument("--shards", type=int, metavar="N",
                   help="the number of shard reports expected; fewer or more is an error, so a shard "
                        "that wrote no report cannot pass unnoticed")
    m.set_defaults(run=run)
    return p


def _plan_facts(matrix: str | None, shown: str, explicit: bool) -> tuple[list[str] | None, list[str] | None,
                                                                        dict[str, int], str]:
    """(cell order, build order, target lines, annotation path) from the matrix, when it can be loaded."""
    path = matrix or shown
    if not path or not Path(path).is_file():
        if explicit:
            raise ConfigError("no such file", file=path, key="--matrix")
        return None, None, {}, shown
    from .. import matrix as matrix_mod
    from ..output import github as ci

    try:
        plan = matrix_mod.load(path)
    except XarchError as e:
        if explicit:
            raise
        # the reports name the matrix as it was seen where the shards ran; here it may not load
        print(plain(f"xrun: warning: not using {path} for plan order: {e}"), file=sys.stderr)
        return None, None, {}, shown
    return ([c.id for c in plan.cells], [b.target.spec for b in plan.builds], dict(plan.target_lines),
            ci.workspace_relative(Path(path)))


def _print_result(merged: Mapping[str, Any], n: int, out_path: str) -> None:
    from ..merge import report_passed

    s = merged["summary"]
    state = "passed" if report_passed(merged) else "failed"
    print(f"merged {n} reports: {s['cells']} cells ({s['ok']} ok, {s['xfail']} xfail, {s['failed']} failed), "
          f"{len(merged['builds'])} builds ({s['builds_failed']} not ok): {state}; wrote {out_path}")
    for b in merged["builds"]:
        if b.get("verdict") != "ok":
            print(plain(f"  build {b['target']} {b['verdict']}" + (f"\n    fix: {b['fix']}" if b.get("fix") else "")))
    for c in merged["cells"]:
        if not c.get("passed"):
            xf = f" (xfail expected {c['xfail']})" if c.get("xfail") else ""
            print(plain(f"  {c['id']} {c['verdict']}{xf}" + (f"\n    fix: {c['fix']}" if c.get("fix") else "")))


def run(ns: argparse.Namespace) -> int:
    from ..merge import load_report, merge_reports, report_passed
    from ..output import github as ci
    from ..output import html, junit
    from ..output.report import write_json_dict

    try:
        if ns.shards is not None and ns.shards != len(ns.reports):
            raise ConfigError(f"expected {ns.shards} shard reports, got {len(ns.reports)} "
                              f"({', '.join(ns.reports)}); a shard whose job failed before writing its "
                              "report must not let the merge pass", file="command line", key="--shards")
        reports = [load_report(p) for p in ns.reports]
        shown = str(reports[0].get("matrix") or "")
        cell_order, build_order, lines, annotate_as = _plan_facts(ns.matrix, shown, ns.matrix is not None)
        merged = merge_reports(reports, names=ns.reports, cell_order=cell_order, build_order=build_order)
    except XarchError as e:
        print(f"xrun: {plain(e)}", file=sys.stderr)
        return e.exit_code
    write_json_dict(merged, ns.json)
    if ns.junit:
        junit.write_junit(merged, ns.junit)
    if ns.html:
        html.write_html(merged, ns.html)
    _print_result(merged, len(reports), ns.json)
    ci.emit(merged, annotate_as or "matrix.yaml", lines)
    return 0 if report_passed(merged) else 1
