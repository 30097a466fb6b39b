"""`xrun exec`: run any binary in one cell, passing args, stdin, stdout, stderr and the exit status through.

So `go test -exec 'xrun exec --profile pi-zero' ./...` runs a package's own tests on that CPU and
image. The arch comes from the binary's header; the level from its Go build info. The current
directory (go test runs a test binary in its package directory) is bound read-only at the same path.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from . import paths, platforms, proc
from .artifact import inspect
from .engines.launch import split_status
from .engines.limits import cell_limits
from .engines.local import LocalEngine
from .errors import ConfigError, InfraError
from .execview import ExecView, cell_env, view_for
from .model import STDERR_TO_TERMINAL, Evidence
from .plan import Cell, Expect, Profile, RunSpec, Target, builtin_profile
from .profiles import BUILTIN_PROFILES


def _profile(name: str, goarch: str) -> Profile:
    if name in BUILTIN_PROFILES:
        return builtin_profile(name)
    from .profiles.machine import from_cpu

    if (r := from_cpu(goarch, name)) is not None:       # a model with toggles: what they need added
        return Profile.of_machine(name, {goarch: r}, "cpu")
    return Profile(name, {goarch: name})     # a plain qemu model name


def _image_known(image: str) -> bool:
    """scratch or an image definition (a form, `distroless-static:nonroot`, is checked by its definition)."""
    if image == "scratch":
        return True
    base, sep, _ = image.partition(":")
    if not (paths.images_dir() / f"{base}.yaml").is_file():
        return False
    if not sep:
        return True
    from .rootfs.definitions import form_config

    return form_config(image) is not None


def entry_point() -> list[str]:
    """How a wrapper starts xrun: the installed `xrun` script, else this Python with -P (the cwd, a Go
    module that may have its own `runner/` or `xarch/` directory, is then not on sys.path)."""
    for cand in (Path(sys.executable).with_name("xrun"), shutil.which("xrun")):
        if cand and os.access(cand, os.X_OK):
            return [str(Path(cand).absolute())]
    return [sys.executable, "-P", "-m", "xarch"]


def install_wrappers(directory: Path, options: Sequence[str]) -> tuple[list[Path], list[str]]:
    """go_linux_<goarch>_exec scripts that `go test` / `go run` pick up from PATH when cross-compiling,
    and notes. Go runs a binary of the host's own arch itself and never looks for that wrapper: none is
    written (a CPU profile for it needs `-exec`)."""
    directory.mkdir(parents=True, exist_ok=True)
    xrun = entry_point()
    out, notes = [], []
    host = platforms.host_goarch()
    for goarch, a in platforms.ARCHES.items():
        if a.qemu is None:
            continue
        p = directory / f"go_linux_{goarch}_exec"
        if goarch == host:
            p.unlink(missing_ok=True)       # a stale one would suggest it is used
            opts = " ".join(shlex.quote(o) for o in options)
            notes.append(f"no go_linux_{goarch}_exec: go runs {goarch} test binaries on this {goarch} host itself "
                         f"and never calls that wrapper, so a CPU profile for {goarch} needs "
                         f"`go test -exec '{shlex.join(xrun)} exec {opts}' ./...`")
            continue
        p.write_text("#!/bin/sh\n# written by `xrun exec --install-wrappers`: runs Go test binaries in an "
                     "xarch cell\nexec " + " ".join(shlex.quote(x) for x in [*xrun, "exec", *options])
                     + ' "$@"\n')
        p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        out.append(p)
    return out, notes


def run_in_cell(binary_arg: str, args: Sequence[str], *, image: str, profile: str,
                timeout: float | None, env_items: Sequence[str] = (), no_env: bool = False) -> int:
    """Run the binary; return its exit status (128+N when killed by signal N, like a shell).

    What it sees of the host and which variables it gets: runner/execview.py."""
    if not _image_known(image):
        from .matrix import known_images

        raise ConfigError(f"unknown image '{image}'; known: {', '.join(known_images())}",
                          file="command line", key="--image")
    binary = Path(binary_arg).resolve()
    facts = inspect(binary)
    if facts.format == "missing":
        raise ConfigError("no such file", file=binary_arg)
    if facts.format != "elf" or facts.goarch is None:
        raise ConfigError(f"not a Linux executable xarch can run: {facts.describe()}", file=binary_arg)
    a = platforms.arch(facts.goarch)
    level = facts.go_level
    spec = f"linux/{a.goarch}" + (f"/{level}" if level and level != a.default_level else "")
    target = Target(spec, "linux", a.goarch, level if level != a.default_level else None)
    prof = _profile(profile, a.goarch)
    model = prof.model_for(target)
    if model is None:
        raise ConfigError(f"profile '{profile}' names no CPU for {a.goarch}", file="command line",
                          key="--profile")
    cell = Cell(target, image, prof, model, tuple(args), {})
    env = cell_env(os.environ, env_items, no_env)
    run = RunSpec(tuple(args), env, None, timeout or 0, Expect())
    cwd = Path.cwd()
    with LocalEngine() as engine:
        if image == "scratch":
            root = engine.empty_root
        else:
            from .pipeline import RootfsProvider

            root = RootfsProvider(engine.empty_root).get(cell)
        view = view_for(cwd, args, env, paths.run_tmpdir("exec"))
        try:
            return _run(engine, cell, binary, root, run, cwd, view, timeout)
        finally:
            view.close()


def _run(engine: LocalEngine, cell: Cell, binary: Path, root: Path, run: RunSpec, cwd: Path, view: ExecView,
         timeout: float | None) -> int:
    prep = engine.prepare(cell, binary, root, run, workdir=cwd, binds=view.binds)
    if isinstance(prep, Evidence):
        return _report(cell, prep, run, fallback=127 if prep.loader_missing or not prep.ran else 1)
    # stdio is inherited: the test binary's output streams through as it happens. stderr, unless it is
    # a terminal, also goes through a pipe whose tail says why a run failed (Go's CPU check, qemu)
    tail = None if sys.stderr.isatty() else bytearray()
    out_tail = None if sys.stdout.isatty() else bytearray()
    try:
        with cell_limits(run.limits) as lim:
            try:
                rc, timed_out = proc.run_attached(prep.argv, timeout=timeout, preexec_fn=lim.preexec,
                                                  pass_fds=prep.fds, stderr_tail=tail, stdout_tail=out_tail)
            except KeyboardInterrupt:
                return 130
            if timed_out:
                sys.stderr.write(f"xrun exec: timeout after {timeout:g}s in {cell.id}; killed\n")
                return 124
            outcome = lim.outcome()
    finally:
        prep.close()
    code, sig = split_status(rc, None)
    if rc == 0:
        return 0
    err = tail.decode(errors="replace") if tail is not None else ""
    said = out_tail.decode(errors="replace") if out_tail is not None else ""
    ev = prep.evidence(ran=True, exit_code=code, signal=sig, emulator=prep.emulator, path=prep.how,
                       limits=outcome, hardening=prep.hardening, children=prep.children, stderr=err, stdout=said)
    from . import forensics  # only now: a passing run never loads the evidence readers

    if sig is not None and forensics.wants_core(ev):
        ev = replace(ev, **engine.guest_core(cell, binary, root, run, workdir=cwd, signal=sig, binds=view.binds))
    ev = forensics.enrich(cell, ev, binary)
    if tail is None:
        ev = replace(ev, notes=(*ev.notes, STDERR_TO_TERMINAL))
    return _report(cell, ev, run, fallback=rc, quiet=() if sig is not None else _ORDINARY)


# a test binary's own failure: its output said it all (go test prints FAIL); xrun adds nothing
_ORDINARY = ("exit-status", "ok", "crashed")


def _report(cell: Cell, ev: Evidence, run: RunSpec, fallback: int, quiet: Sequence[str] = ()) -> int:
    """Say in one line why the binary did not run normally (a shell would only say 'Illegal instruction')."""
    from .classify import classify
    from .output.text import plain

    v = classify(cell, ev, run.expect, run.timeout or 0)
    if v.verdict in quiet:
        if v.fix and v.fix.startswith(f"image {cell.image} has no"):    # the image lacks what the test used
            sys.stderr.write(plain(f"xrun exec: {v.fix}") + "\n")
        return fallback
    if v.verdict == "infra-error":
        raise InfraError(v.explanation or "the runner failed", v.fix or "run `xrun doctor`")
    sys.stderr.write(plain(f"xrun exec: {cell.id}: {v.verdict}: {v.explanation}") + "\n")
    if v.fix:
        sys.stderr.write(plain(f"xrun exec: fix: {v.fix}") + "\n")
    proc.kill_all()
    return fallback
