"""`xrun exec`: run any binary in one cell, passing args, stdin, stdout, stderr and the exit status through.

So `go test -exec 'xrun exec --profile pi-zero' ./...` runs a package's own tests on that CPU and
image. The arch comes from the binary's header; the level from its Go build info. The current
directory (go test runs a test binary in its package directory) is bound read-only at the same path.
"""

from __future__ import annotations

import os
import shlex
import stat
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from . import forensics, platforms, proc
from .artifact import inspect
from .classify import classify
from .engines.launch import split_status
from .engines.limits import cell_limits
from .engines.local import LocalEngine
from .errors import ConfigError, InfraError
from .matrix import known_images
from .model import Evidence
from .output.text import plain
from .pipeline import RootfsProvider
from .plan import Cell, Expect, Profile, RunSpec, Target, builtin_profile
from .profiles import BUILTIN_PROFILES


def _profile(name: str, goarch: str) -> Profile:
    if name in BUILTIN_PROFILES:
        return builtin_profile(name)
    from .profiles.machine import from_cpu

    if (r := from_cpu(goarch, name)) is not None:       # a model with toggles: what they need added
        return Profile(name, {goarch: r.cpu}, machine={goarch: r}, source="cpu")
    return Profile(name, {goarch: name})     # a plain qemu model name


def install_wrappers(directory: Path, options: Sequence[str]) -> list[Path]:
    """go_linux_<goarch>_exec scripts that `go test` / `go run` pick up from PATH when cross-compiling."""
    directory.mkdir(parents=True, exist_ok=True)
    xrun = [sys.executable, "-m", "xarch"]
    out = []
    for goarch, a in platforms.ARCHES.items():
        if a.qemu is None:
            continue
        p = directory / f"go_linux_{goarch}_exec"
        p.write_text("#!/bin/sh\n# written by `xrun exec --install-wrappers`: runs Go test binaries in an "
                     "xarch cell\nexec " + " ".join(shlex.quote(x) for x in [*xrun, "exec", *options])
                     + ' "$@"\n')
        p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        out.append(p)
    return out


def run_in_cell(binary_arg: str, args: Sequence[str], *, image: str, profile: str,
                timeout: float | None) -> int:
    """Run the binary; return its exit status (128+N when killed by signal N, like a shell)."""
    if image not in known_images():
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
    # the caller's Go/test settings pass through (GOCOVERDIR, GODEBUG, ...); the host's paths do not
    env = {k: v for k, v in os.environ.items()
           if (k.startswith(("GO", "TEST")) and k not in ("GOROOT", "GOPATH", "GOCACHE", "GOMODCACHE"))
           or k == "TERM"}
    run = RunSpec(tuple(args), env, None, timeout or 0, Expect())
    with LocalEngine() as engine:
        root = RootfsProvider(engine.empty_root).get(cell)
        prep = engine.prepare(cell, binary, root, run, workdir=Path.cwd())
        if isinstance(prep, Evidence):
            return _report(cell, prep, run, fallback=127 if prep.loader_missing or not prep.ran else 1)
        # stdio is inherited: the test binary's output streams through as it happens
        try:
            with cell_limits(run.limits) as lim:
                try:
                    rc, timed_out = proc.run_attached(prep.argv, timeout=timeout, preexec_fn=lim.preexec,
                                                      pass_fds=prep.fds)
                except KeyboardInterrupt:
                    return 130
                if timed_out:
                    sys.stderr.write(f"xrun exec: timeout after {timeout:g}s in {cell.id}; killed\n")
                    return 124
                outcome = lim.outcome()
        finally:
            prep.close()
        _, sig = split_status(rc, None)
        if sig is not None:
            ev = prep.evidence(ran=True, exit_code=None, signal=sig, emulator=prep.emulator, path=prep.how,
                               limits=outcome, hardening=prep.hardening, children=prep.children)
            if forensics.wants_core(ev):    # stderr went to the caller: only a guest core can say where
                ev = replace(ev, **engine.guest_core(cell, binary, root, run, workdir=Path.cwd(),
                                                      signal=sig))
            _report(cell, forensics.enrich(cell, ev, binary), run, fallback=rc)
    return int(rc)


def _report(cell: Cell, ev: Evidence, run: RunSpec, fallback: int) -> int:
    """Say in one line why the binary did not run normally (a shell would only say 'Illegal instruction')."""
    v = classify(cell, ev, run.expect, run.timeout or 0)
    if v.verdict == "infra-error":
        raise InfraError(v.explanation or "the runner failed", v.fix or "run `xrun doctor`")
    sys.stderr.write(plain(f"xrun exec: {cell.id}: {v.verdict}: {v.explanation}") + "\n")
    if v.fix:
        sys.stderr.write(plain(f"xrun exec: fix: {v.fix}") + "\n")
    proc.kill_all()
    return fallback
