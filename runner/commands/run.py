"""`xrun run [MATRIX]`: build and run a matrix, write its reports; the default command."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
from pathlib import Path
from typing import Any

from .. import proc
from ..errors import ConfigError, Interrupted
from ..output.text import safe
from . import Subparsers, out_console


def _only(s: str) -> tuple[str, str]:
    from ..expand import parse_only

    try:
        return parse_only(s)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(e.detail) from None


def _shard(s: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in s.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{s}' is not I/N (e.g. 1/3)") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"'{s}': I must be between 1 and N")
    return i, n


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    r: argparse.ArgumentParser = sub.add_parser("run", help="build and run a matrix (the default command)")
    r.add_argument("matrix", nargs="?", default="matrix.yaml")
    r.add_argument("--json", metavar="PATH", help="write the JSON report here")
    r.add_argument("--junit", metavar="PATH", help="write a JUnit XML report here (a testcase per cell and build)")
    r.add_argument("--html", metavar="PATH", help="write a self-contained HTML grid here")
    r.add_argument("--engine", choices=("local", "docker"), default="local")
    r.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, metavar="N")
    r.add_argument("--only", type=_only, action="append", default=[], metavar="KEY=GLOB",
                   help="keep cells whose target/image/profile matches (repeatable: one key's globs are "
                        "alternatives, keys must all match); a target glob matches per "
                        "path segment: linux/arm* is arm with any variant, not arm64 (linux/arm64* is)")
    r.add_argument("--shard", type=_shard, metavar="I/N", help="run the I-th of N stable slices of the cells")
    r.add_argument("--list", action="store_true", help="print the plan (builds and cells) and exit")
    r.add_argument("--from-goreleaser", metavar="ARTIFACTS_JSON",
                   help="take targets and artifacts from goreleaser's dist/artifacts.json instead of building")
    r.set_defaults(run=run)
    return r


def run(ns: argparse.Namespace) -> int:
    from rich.console import Console

    from ..pipeline import RunResult, execute
    from ..session import Session

    console = out_console()
    if ns.jobs < 1:
        raise ConfigError(f"-j must be at least 1, got {ns.jobs}", file="command line", key="-j")
    prebuilt = None
    if ns.from_goreleaser:
        from ..goreleaser import targets_from_goreleaser

        skipped: list[str] = []
        prebuilt = dict(targets_from_goreleaser(ns.from_goreleaser, skipped=skipped))
        for why in skipped:
            Console(stderr=True).print(f"[yellow]xrun:[/] skipped from {safe(ns.from_goreleaser)}: {safe(why)}",
                                       highlight=False)
        if not prebuilt:
            raise ConfigError("no binary artifact xarch can run", file=ns.from_goreleaser)
    sess = Session(Path(ns.matrix), ns.only, ns.engine, shard=ns.shard, prebuilt=prebuilt)
    plan = sess.plan()
    if ns.only:     # what a glob took, so one that takes more (or other) cells than meant shows at once
        sel = " ".join(f"{k}={g}" for k, g in ns.only)
        console.print(safe(f"--only {sel}: {len(plan.cells)} cell{'s' if len(plan.cells) != 1 else ''}: "
                           + ", ".join(c.id for c in plan.cells)), highlight=False, soft_wrap=True)
    if ns.list:
        for b in plan.builds:
            console.print(safe(f"build {b.target.spec} -> {b.output_rel}: {shlex.join(b.argv)}"), highlight=False)
        for c in plan.cells:
            console.print(safe(f"cell  {c.id}  cpu={c.cpu or 'native'}" + (f"  xfail={c.xfail}" if c.xfail else "")),
                          highlight=False)
        for note in plan.notes:
            console.print(safe(f"plan: {note}"), highlight=False)
        return 0
    if not plan.cells and not plan.builds:
        raise ConfigError("no cell is left after --only/--shard", file="command line", key="--only")
    sess.preflight()   # a missing emulator, sandbox or toolchain fails fast, exit 3 (the plugin's too)
    from ..output import console as ui

    res = RunResult(plan, ns.engine)
    # Ctrl-C and SIGTERM (a CI cancel) only kill the running process trees and set a flag here; the
    # pipeline raises KeyboardInterrupt at a safe point. Raising from the handler itself could land
    # inside concurrent.futures while it holds a future's lock, and the pool would then never drain.
    def on_signal(signum: int, frame: object) -> None:
        proc.stop()

    old = signal.signal(signal.SIGTERM, on_signal)
    old_int = signal.signal(signal.SIGINT, on_signal)
    try:
        engine, _roots = sess.engine()
        with ui.progress(console, plan) as bar:
            execute(plan, engine, ns.jobs, bar, res)
    except (KeyboardInterrupt, proc.Stopped):
        proc.stop()
        res.interrupted = True
    finally:
        sess.close()
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
        _write_reports(ns, res)
    ui.render(console, res)
    if res.interrupted:
        raise Interrupted("interrupted; partial results" + (f" written to {ns.json}" if ns.json else ""))
    return 0 if res.passed else 1


def _write_reports(ns: argparse.Namespace, res: Any) -> None:
    """JSON, JUnit, HTML and the CI provider's output, from one report dict (also on interrupt)."""
    from ..output import github as ci
    from ..output import html, junit, report

    shown = _display(res.plan.matrix_path)
    d = report.to_json(res, shown)
    if ns.json:
        report.write_json_dict(d, ns.json)
    if ns.junit:
        junit.write_junit(d, ns.junit)
    if ns.html:
        html.write_html(d, ns.html)
    ci.emit(d, ci.workspace_relative(res.plan.matrix_path), dict(res.plan.target_lines))


def _display(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)
