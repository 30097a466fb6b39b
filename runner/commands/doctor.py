"""`xrun doctor [MATRIX] [--engine local|docker] [--json]`: the checks of runner/doctor.py as a table or
JSON; 0 when all that is needed is here, else 3."""

from __future__ import annotations

import argparse
import json

from ..output.text import safe
from . import Subparsers

ENGINES = ("local", "docker")     # doctor.ENGINE_NEEDS's keys (a unit test holds them equal); doctor loads late

_STYLE = {"ok": "green", "warn": "yellow", "FAIL": "bold red", "absent": "dim"}


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "doctor", help="check that this machine has what a matrix needs",
        description="Check that this machine has what a matrix needs "
                    "(emulators, binfmt, sandbox, docker, toolchains), with the command that fixes each gap.")
    p.add_argument("matrix", nargs="?", help="check what this matrix needs (default: the engine's essentials "
                   "and every emulator)")
    p.add_argument("--engine", choices=ENGINES, default="local")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(run=run)
    return p


def run(ns: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rich.console import Console
    from rich.table import Table

    from ..doctor import required_for_plan, run_checks

    arches: set[str] | None = None
    from ..doctor import ENGINE_NEEDS

    needs: set[str] = set(ENGINE_NEEDS[ns.engine])
    if ns.matrix is not None:
        from .. import matrix

        arches, needs = required_for_plan(matrix.load(ns.matrix), ns.engine)
    checks = run_checks(arches=arches, engine=ns.engine, needs=needs)
    missing = [c for c in checks if c.needed and not c.ok]
    console = Console(highlight=False)
    if ns.json:
        payload = {"engine": ns.engine, "matrix": ns.matrix, "ok": not missing,
                   "checks": [{**asdict(c), "status": c.status} for c in checks]}
        console.out(json.dumps(payload, indent=2), highlight=False)
        return 3 if missing else 0
    table = Table(title=f"xrun doctor ({ns.engine} engine" + (f", {ns.matrix})" if ns.matrix else ")"),
                  title_justify="left")
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        style = _STYLE[c.status]
        table.add_row(safe(c.name), f"[{style}]{c.status}[/]", safe(c.detail),
                      safe(c.fix) if c.fix else "", style=None if c.needed or c.ok else "dim")
    console.print(table)
    what = "this matrix" if ns.matrix else f"the {ns.engine} engine"
    if missing:
        console.print(f"[bold red]{len(missing)} piece(s) {what} needs are missing:[/] "
                      + safe(", ".join(c.name for c in missing)))
        return 3
    absent = [c.name for c in checks if not c.needed and c.status in ("absent", "FAIL")]
    console.print(f"[green]everything {what} needs is here[/]"
                  + (f"; not needed, and absent: {safe(', '.join(absent))} (its row says what that costs)"
                     if absent else ""))
    return 0
