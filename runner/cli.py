"""`xrun`: the command line. Only main() exits; every error class has its own exit code."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from . import __version__, proc
from .errors import ConfigError, InfraError, Interrupted, XarchError
from .output.text import safe

SUBCOMMANDS = ("run", "images", "doctor", "explain", "exec", "gha", "report")


def _only(s: str) -> tuple[str, str]:
    from .matrix import parse_only

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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(f"{message} (see `{self.prog} --help`)", file="command line")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="xrun", description="Cross-build Go targets and run each under qemu-user in real "
                                         "minimal root filesystems with a chosen CPU model.")
    p.add_argument("--version", action="version", version=f"xrun {__version__}")
    sub = p.add_subparsers(dest="cmd", parser_class=_Parser)
    r = sub.add_parser("run", help="build and run a matrix (the default command)")
    r.add_argument("matrix", nargs="?", default="matrix.yaml")
    r.add_argument("--json", metavar="PATH", help="write the JSON report here")
    r.add_argument("--junit", metavar="PATH", help="write a JUnit XML report here (a testcase per cell and build)")
    r.add_argument("--html", metavar="PATH", help="write a self-contained HTML grid here")
    r.add_argument("--engine", choices=("local", "docker"), default="local")
    r.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, metavar="N")
    r.add_argument("--only", type=_only, action="append", default=[], metavar="KEY=GLOB",
                   help="keep cells whose target/image/profile matches (repeatable)")
    r.add_argument("--shard", type=_shard, metavar="I/N", help="run the I-th of N stable slices of the cells")
    r.add_argument("--list", action="store_true", help="print the plan (builds and cells) and exit")
    r.add_argument("--from-goreleaser", metavar="ARTIFACTS_JSON",
                   help="take targets and artifacts from goreleaser's dist/artifacts.json instead of building")

    im = sub.add_parser("images", help="list, build, locate and prune the runtime images")
    isub = im.add_subparsers(dest="images_cmd", parser_class=_Parser)
    isub.add_parser("list", help="the definitions and what is cached (size, fidelity)")
    ib = isub.add_parser("build", help="build an image's root filesystem for one or all arches")
    ib.add_argument("name")
    ib.add_argument("--arch", action="append", default=[],
                    help="Debian arch (arm64, armel, ...) or GOARCH[/variant] (arm/v6); default: all")
    ib.add_argument("--refresh", action="store_true", help="update the package lists first")
    ip = isub.add_parser("path", help="print the cached root directory of an image for an arch")
    ip.add_argument("name")
    ip.add_argument("arch")
    iv = isub.add_parser("verify", help="check cached images file by file against their manifests; "
                         "a modified one is removed, so the next run rebuilds it (exit 1)")
    iv.add_argument("name", nargs="?")
    ipr = isub.add_parser("prune", help="remove stale entries (--all: everything)")
    ipr.add_argument("--all", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if (args_in and args_in[0] not in SUBCOMMANDS and not args_in[0].startswith("-")) or (args_in and args_in[0].startswith("-") and args_in[0] not in ("-h", "--help", "--version")):
        args_in = ["run", *args_in]
    # CI logs are not terminals: rich would wrap explanations at 80 columns there
    wide = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120
    console = Console(stderr=False, highlight=False, width=wide)
    err = Console(stderr=True, highlight=False)
    try:
        if args_in and args_in[0] == "explain":
            from .explain import main_explain

            return main_explain(args_in[1:])
        if args_in and args_in[0] == "report":
            from .merge import main_report

            return main_report(args_in[1:])
        if args_in and args_in[0] == "gha":
            from .gha import main_gha

            return main_gha(args_in[1:])
        if args_in and args_in[0] == "exec":
            from .execwrap import main_exec

            return main_exec(args_in[1:])
        if args_in and args_in[0] == "doctor":
            from .doctor import main_doctor

            return main_doctor(args_in[1:])
        ns = parser().parse_args(args_in or ["run"])
        if ns.cmd in (None, "run"):
            if ns.cmd is None:
                ns = parser().parse_args(["run"])
            return cmd_run(ns, console)
        if ns.cmd == "images":
            return cmd_images(ns, console)
        raise ConfigError(f"'{ns.cmd}' is not implemented yet", file="command line")
    except XarchError as e:
        err.print(f"[bold red]xrun:[/] {safe(e)}", markup=True, highlight=False, soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        proc.stop()
        err.print("[bold red]xrun:[/] interrupted")
        return Interrupted.exit_code


def cmd_run(ns: argparse.Namespace, console: Console) -> int:
    from . import matrix as matrix_mod
    from .engines import make_engine
    from .pipeline import RunResult, execute

    if ns.jobs < 1:
        raise ConfigError(f"-j must be at least 1, got {ns.jobs}", file="command line", key="-j")
    prebuilt = None
    if ns.from_goreleaser:
        from .goreleaser import targets_from_goreleaser

        skipped: list[str] = []
        prebuilt = dict(targets_from_goreleaser(ns.from_goreleaser, skipped=skipped))
        for why in skipped:
            Console(stderr=True).print(f"[yellow]xrun:[/] skipped from {safe(ns.from_goreleaser)}: {safe(why)}",
                                       highlight=False)
        if not prebuilt:
            raise ConfigError("no binary artifact xarch can run", file=ns.from_goreleaser)
    plan = matrix_mod.load(ns.matrix, prebuilt=prebuilt)
    plan = matrix_mod.select(plan, ns.only, ns.shard)
    if ns.list:
        for b in plan.builds:
            console.print(safe(f"build {b.target.spec} -> {b.output_rel}: {shlex.join(b.argv)}"), highlight=False)
        for c in plan.cells:
            console.print(safe(f"cell  {c.id}  cpu={c.cpu or 'native'}" + (f"  xfail={c.xfail}" if c.xfail else "")),
                          highlight=False)
        return 0
    if not plan.cells and not plan.builds:
        raise ConfigError("no cell is left after --only/--shard", file="command line", key="--only")
    from .doctor import preflight

    preflight(plan, ns.engine)   # a missing emulator, sandbox or toolchain fails fast, exit 3
    from .output import console as ui

    proc.reset()
    res = RunResult(plan, ns.engine)
    # Ctrl-C and SIGTERM (a CI cancel) only kill the running process trees and set a flag here; the
    # pipeline raises KeyboardInterrupt at a safe point. Raising from the handler itself could land
    # inside concurrent.futures while it holds a future's lock, and the pool would then never drain.
    def on_signal(signum: int, frame: object) -> None:
        proc.stop()

    old = signal.signal(signal.SIGTERM, on_signal)
    old_int = signal.signal(signal.SIGINT, on_signal)
    try:
        with make_engine(ns.engine) as engine:
            engine.preflight(plan.cells)
            with ui.progress(console, plan) as bar:
                execute(plan, engine, ns.jobs, bar, res)
    except (KeyboardInterrupt, proc.Stopped):
        proc.stop()
        res.interrupted = True
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
        _write_reports(ns, res)
    ui.render(console, res)
    if res.interrupted:
        raise Interrupted("interrupted; partial results" + (f" written to {ns.json}" if ns.json else ""))
    return 0 if res.passed else 1


def _debian_arch(a: str) -> str:
    """Accept a Debian arch (armel) or a GOARCH[/variant] (arm/v6) and return the Debian arch."""
    from . import platforms, rootfs

    if a in rootfs.DEBIAN_ARCHES:
        return a
    goarch, _, variant = a.partition("/")
    facts = platforms.ARCHES.get(goarch)
    deb = facts.debian_arch(variant or None) if facts else None
    if deb is None:
        raise ConfigError(f"unknown arch '{a}'; use a Debian arch ({', '.join(rootfs.DEBIAN_ARCHES)}) or "
                          "GOARCH[/variant]", file="command line", key="--arch")
    return deb


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def cmd_images(ns: argparse.Namespace, console: Console) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
    from rich.table import Table

    from . import rootfs

    store = rootfs.ImageStore()
    defs = rootfs.load_definitions()
    sub = ns.images_cmd or "list"
    if sub == "list":
        cached: dict[str, list[rootfs.CachedImage]] = {}
        for c in store.list():
            cached.setdefault(c.name, []).append(c)
        t = Table(show_edge=False)
        for col in ("image", "stands for", "kind", "cached arches", "size"):
            t.add_column(col)
        for name, d in sorted(defs.items()):
            entries = sorted(cached.get(name, []), key=lambda c: c.arch)
            kind = "exact (pulled by digest)" if name == "scratch" else "rebuilt equivalent"
            t.add_row(safe(name), safe(d.reference.image or "-"), kind,
                      ", ".join(c.arch for c in entries) or "-", _size(sum(c.size for c in entries)))
        console.print(t)
        for name, d in sorted(defs.items()):
            console.print(f"[bold]{safe(name)}[/]: {safe(d.fidelity)}", highlight=False)
        return 0
    if sub == "build":
        if ns.name not in defs:
            raise ConfigError(f"unknown image '{ns.name}'; known: {', '.join(sorted(defs))}",
                              file="command line", key="images build")
        arches = [_debian_arch(a) for a in ns.arch] or list(rootfs.DEBIAN_ARCHES)
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=console,
                      transient=True) as bar:
            for deb in arches:
                task = bar.add_task(f"{ns.name}/{deb}", total=None)

                def cb(stage: str, done: int, total: int, task: Any = task, deb: str = deb) -> None:
                    bar.update(task, description=f"{ns.name}/{deb}: {stage}", completed=done,
                               total=total or None)
                root = store.ensure(ns.name, deb, cb, refresh=ns.refresh)
                bar.remove_task(task)
                console.print(safe(f"{ns.name}/{deb}: {root}"), highlight=False)
        return 0
    if sub == "path":
        found = store.path(ns.name, _debian_arch(ns.arch))
        if found is None:
            raise InfraError(f"image {ns.name} for {ns.arch} is not cached",
                             f"build it: xrun images build {ns.name} --arch {ns.arch}")
        console.print(safe(found), highlight=False, soft_wrap=True)
        return 0
    if sub == "verify":
        if ns.name is not None and ns.name not in defs:
            raise ConfigError(f"unknown image '{ns.name}'; known: {', '.join(sorted(defs))}",
                              file="command line", key="images verify")
        checked = store.verify(ns.name)
        bad = 0
        for img, problems in checked:
            if not problems:
                console.print(safe(f"{img.name}/{img.arch}: ok ({img.manifest.parent})"), highlight=False)
                continue
            bad += 1
            console.print(f"[red]{safe(img.name)}/{safe(img.arch)}: modified, removed (the next run "
                          "rebuilds it)[/]", highlight=False)
            for pr in problems[:20]:
                console.print(f"  {safe(pr)}", highlight=False)
            if len(problems) > 20:
                console.print(f"  ... and {len(problems) - 20} more", highlight=False)
        if not checked:
            console.print("no cached image" + (f" of {safe(ns.name)}" if ns.name else ""))
        return 1 if bad else 0
    freed = store.prune(all_entries=ns.all)
    console.print(f"freed {_size(freed)}")
    return 0


def _write_reports(ns: argparse.Namespace, res: Any) -> None:
    """JSON, JUnit, HTML and the CI provider's output, from one report dict (also on interrupt)."""
    from .output import github as ci
    from .output import html, junit, report

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


if __name__ == "__main__":
    sys.exit(main())
