"""The sandbox every foreign cell runs in, and the helpers both runners share.

A bubblewrap sandbox like a Linux cell's (no network, its own pid namespace, --die-with-parent), so a
timeout that kills bwrap takes every process of the cell with it; the host's system dirs are bound
read-only (never its `/`, its home dirs or the project), with a private bounded /tmp.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from ... import proc
from ...model import LimitOutcome
from ...plan import Cell, Limits, RunSpec
from .. import sandbox
from ..limits import cell_limits

BWRAP_FIX = sandbox.BWRAP_FIX
SANDBOX_DIR = "/tmp/xarch"          # on the sandbox's own tmpfs, so bwrap can create mount points there
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def bwrap_base(tmp: Path, exes: tuple[str, ...], seccomp: int | None, limits: Limits) -> list[str]:
    """bwrap args shared by every foreign cell: the host's system dirs read-only (never its `/`, its
    home dirs or the project), a private bounded /tmp, no network, no capabilities."""
    injected = sandbox.write_etc(tmp / "etc")
    return [*sandbox.base_args(seccomp=seccomp), *sandbox.host_runtime_args(exes, injected),
            *sandbox.tmpfs_args("/tmp", limits.memory), *sandbox.proc_dev_args(), "--dir", SANDBOX_DIR]


def run_sandboxed(build_argv: Callable[[int | None], list[str]], run: RunSpec, timeout: float,
                   stdin: str | bytes | None = None) -> tuple[proc.Result, LimitOutcome, tuple[str, ...]]:
    """Run one sandbox command line with the cell's seccomp filter and limits."""
    fd, no_seccomp = sandbox.seccomp_fd()
    try:
        argv = build_argv(fd)
        with cell_limits(run.limits) as lim:
            r = proc.run(argv, stdin=stdin, timeout=timeout, output_limit=run.limits.output,
                         preexec_fn=lim.preexec, pass_fds=(fd,) if fd is not None else ())
            outcome = lim.outcome()
    finally:
        if fd is not None:
            os.close(fd)
    return r, outcome, sandbox.HARDENING + ((no_seccomp,) if no_seccomp else ())


def cell_env(cell: Cell, run: RunSpec, base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    env.update(run.env)
    env.update(cell.env)
    return env


@functools.lru_cache(maxsize=8)
def version_of(exe: str) -> str:
    r = proc.run([exe, "--version"], timeout=30)
    return (r.stdout.strip() or r.stderr.strip()).splitlines()[0] if r.returncode == 0 else "unknown"

