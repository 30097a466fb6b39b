"""The rich console: progress while building and running, then the grid and each failure's fix."""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.cells import cell_len
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..model import Verdicts
from ..pipeline import Progress as ProgressFn
from ..pipeline import RunResult
from ..plan import Plan
from .text import safe


@contextmanager
def progress(console: Console, plan: Plan) -> Iterator[ProgressFn]:
    """A two-line progress display (builds, cells) fed by the pipeline's callback."""
    with Progress(TextColumn("{task.description:<7}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[last]}", style="dim"), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        tb = bar.add_task("build", total=len(plan.builds), last="")
        tr = bar.add_task("run", total=len(plan.cells), last="")

        def update(stage: str, item: str) -> None:
            bar.update(tb if stage == "build" else tr, advance=1, last=item)
        yield update


def _label(verdict: str, xfail: str | None, passed: bool) -> str:
    if xfail and passed:
        return f"[cyan]xfail[/] [dim]({safe(verdict)})[/]"
    v = Verdicts.get(verdict)
    color = v.color if v else "white"
    mark = "" if passed else " ✗"
    return f"[{color}]{safe(verdict)}{mark}[/]"


def render(console: Console, res: RunResult) -> None:
    """Builds, the verdict grid (targets by image:profile), then failures with explanation and fix."""
    plan = res.plan
    if res.builds:
        bt = Table(title="builds", title_justify="left", show_edge=False)
        bt.add_column("target")
        bt.add_column("verdict")
        bt.add_column("artifact")
        bt.add_column("time", justify="right")
        rows = []
        for b in res.builds:
            t = "cached" if b.cached else f"{b.duration_s:.1f}s"
            rows.append((safe(b.job.target.spec), _label(b.verdict, None, b.verdict == "ok"), safe(b.job.output_rel), t))
            bt.add_row(*rows[-1])
        _print_fitting(console, bt, "builds", rows)
    for note in plan.notes:             # what the plan left out, and why (never silently)
        console.print(f"plan: {safe(note)}")

    cols: list[str] = []
    for c in plan.cells:
        k = f"{c.image}:{c.profile.name}"
        if k not in cols:
            cols.append(k)
    by: dict[tuple[str, str], str] = {}
    for r in res.cells:
        by[(r.cell.target.spec, f"{r.cell.image}:{r.cell.profile.name}")] = (
            _label(r.verdict.verdict, r.cell.xfail, r.passed)
            + (f" [dim]{safe(r.evidence.cpu)}[/]" if r.evidence and r.evidence.cpu not in ("-",) else ""))
    grid = Table(title="cells", title_justify="left", show_edge=False)
    grid.add_column("target")
    for k in cols:
        grid.add_column(safe(k))
    targets = list(dict.fromkeys(c.target.spec for c in plan.cells))
    for t in targets:
        grid.add_row(safe(t), *[by.get((t, k), "[dim]·[/]") for k in cols])
    _print_fitting(console, grid, "cells", [(safe(t), safe(k), by[(t, k)]) for t in targets for k in cols
                                            if (t, k) in by])

    problems = [b for b in res.builds if b.verdict != "ok"]
    for b in problems:
        console.print(f"\n[bold]{safe(b.job.target.spec)}[/] build: {_label(b.verdict, None, False)}"
                      + (f" ({b.cause})" if b.cause else ""))
        if b.explanation:
            console.print(f"  {safe(b.explanation)}")
        if b.fix:
            console.print(f"  [bold]fix:[/] {safe(b.fix)}")
    for r in res.cells:
        if r.verdict.ok:
            continue
        head = f"\n[bold]{safe(r.cell.id)}[/] {_label(r.verdict.verdict, r.cell.xfail, r.passed)}"
        if r.cell.xfail and r.passed:
            head += " [dim](expected by the matrix's xfail)[/]"
        elif r.cell.xfail:
            head += f" [dim](xfail expected {r.cell.xfail})[/]"
        console.print(head)
        if r.verdict.explanation:
            console.print(f"  {safe(r.verdict.explanation)}")
        if r.evidence and r.evidence.fault:
            console.print(f"  [bold]fault:[/] {safe(r.evidence.fault.line())}")
        if r.verdict.fix:
            console.print(f"  [bold]fix:[/] {safe(r.verdict.fix)}")
        if r.evidence and r.evidence.notes:
            for n in r.evidence.notes[:1]:
                console.print(f"  [dim]note: {safe(n)}[/]")

    s = res.summary()       # the report's counts: a not-runnable cell is not "ok"
    color = "green" if res.passed else "red"
    extra = " (interrupted)" if res.interrupted else ""
    nr = f", {s['not_runnable']} not run" if s["not_runnable"] else ""
    console.print(f"\n[{color}]{s['cells']} cells: {s['ok']} ok, {s['xfail']} xfail, {s['failed']} failed{nr}; "
                  f"{len(res.builds)} builds, {s['builds_failed']} not ok{extra}[/]")


def _print_fitting(console: Console, table: Table, title: str, lines: Sequence[tuple[str, ...]]) -> None:
    """The table, or one line per row when it is wider than the console (a CI log is 120 columns):
    rich would cut its cells short ("scratch:basel…"), and a verdict must never be cut."""
    wide = Console(width=100_000, file=io.StringIO(), color_system=None, highlight=False)
    with wide.capture() as cap:     # the width it needs: rendered with all the room it could want
        wide.print(table)
    if max((cell_len(ln.rstrip()) for ln in cap.get().splitlines()), default=0) <= console.width:
        console.print(table)
        return
    console.print(f"[italic]{title}[/] (one per line: the grid is wider than {console.width} columns)")
    widths = [max((Text.from_markup(r[i]).cell_len for r in lines), default=0) for i in range(len(lines[0]) - 1)] \
        if lines else []
    for row in lines:
        pads = [" " * (w - Text.from_markup(c).cell_len) for c, w in zip(row, widths, strict=False)]
        console.print("  " + "  ".join(c + pad for c, pad in zip(row, [*pads, ""], strict=True)), soft_wrap=True,
                      highlight=False)
