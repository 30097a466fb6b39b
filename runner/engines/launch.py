"""What every engine does for a Linux cell before its sandbox starts, and how it reads the end.

The local and docker engines give the same verdicts because they share this: the static checks
(a missing artifact, a foreign file on the native profile, a PT_INTERP the image lacks), the
environment (PATH, HOME=/, the arch's run_env recorded as a note), the command inside the root
(`qemu-<arch>-static -cpu MODEL /app ...` or `/app ...`), the injected /etc files, the TCG probe and
the 128+N exit status both bwrap and tini use for a child killed by signal N.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import paths, platforms, proc
from ..artifact import inspect, loader_present
from ..errors import InfraError
from ..model import Evidence
from ..plan import Cell, RunSpec
from . import emulator, sandbox
from .emulator import QEMU_FIX, qemu_binary
from .execplan import launch_env
from .imageconfig import ImageSettings, settings_of

QEMU_IN_ROOT = "/.xarch/qemu"
APP_IN_ROOT = "/app"
APP_BESIDE = "/.xarch/cell/app"     # where the artifact goes when the image has its own /app (WORKDIR /app)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOSTNAME = sandbox.HOSTNAME
INJECTED_ETC = ("hosts", "resolv.conf", "hostname")


def write_etc(tmp: Path) -> None:
    """<tmp>/etc/{hosts,resolv.conf,hostname} (bound over the image's) and the empty root <tmp>/empty,
    so name resolution and the hostname behave the same in every engine."""
    sandbox.write_etc(tmp / "etc")
    (tmp / "empty").mkdir(exist_ok=True)


_probe_lock = threading.Lock()
_probe_cache: dict[tuple[str, str], tuple[str, ...]] = {}


def tcg_missing_features(goarch: str, model: str) -> tuple[str, ...]:
    """CPU features an x86 model asks for that qemu's TCG cannot provide (empty elsewhere).

    qemu prints "TCG doesn't support requested feature: CPUID.07H:EBX.avx512f [bit 16]" when the
    model is instantiated without check=off. qemu-x86_64-static is itself a static x86-64 ELF, so
    it serves as the guest for the probe; the TCG feature set is shared by qemu-i386.
    """
    if not platforms.arch(goarch).cpu_check_off or not model:
        return ()
    key = (goarch, model)
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
    q = emulator.verify(proc.which("qemu-x86_64-static", QEMU_FIX))

    def probe() -> list[str]:
        r = proc.run([q, "-cpu", model.split(",check=")[0], q, "--version"], timeout=30)
        feats = [line.split("feature:", 1)[-1].strip() for line in r.stderr.splitlines()
                 if "doesn't support requested feature" in line]
        return list(dict.fromkeys(feats))

    result = tuple(paths.remembered("tcg", [q], model, probe))     # the same qemu says the same
    with _probe_lock:
        _probe_cache[key] = result
    return result


def _form_config(image: str) -> dict[str, str] | None:
    """The config of a builtin image's form (`distroless-static:nonroot`); None for any other image."""
    if ":" not in image:
        return None
    from ..rootfs.definitions import form_config  # parses images/*.yaml: only for a form
    return form_config(image)


@dataclass(frozen=True)
class Launch:
    """What any engine starts for a cell: the command inside the root, its env, and the evidence maker."""

    evidence: Callable[..., Evidence]
    emulator: str | None            # the host's qemu-<arch>-static, to mount at QEMU_IN_ROOT
    env: dict[str, str]
    notes: tuple[str, ...]
    command: list[str]              # argv inside the root: [QEMU_IN_ROOT, -cpu, MODEL, /app, ...] or [/app, ...]
    emu: str                        # "qemu-arm-static -cpu arm1176" or "native"
    image: ImageSettings = field(default_factory=ImageSettings)   # the image config's user, env and working directory
    app: str = APP_IN_ROOT          # where the artifact is bound (app_path)


def plan_launch(cell: Cell, artifact: Path, rootfs: Path, run: RunSpec) -> Evidence | Launch:
    """The static checks every engine makes before starting a cell (in this order), then its launch.

    A missing artifact, a foreign file on the native profile (binfmt on this host would hide it; a
    real machine of the host's arch refuses it) and a PT_INTERP the image lacks are decided here.
    """
    facts = inspect(artifact)
    native = cell.cpu == ""
    cpu_label = "native" if native else cell.cpu

    image = settings_of(rootfs, _form_config(cell.image))

    def mk(**kw: Any) -> Evidence:
        return Evidence(cell.id, cpu_label, facts, **{"user": image.user_text, **kw})

    if facts.format == "missing":
        return mk(ran=False, infra="the artifact is missing", infra_fix="see the build log")
    if native and (facts.format != "elf" or facts.goarch != platforms.host_goarch()):
        return mk(ran=False, path="static check (native profile)")
    if facts.interp and not loader_present(rootfs, facts.interp):
        return mk(ran=False, loader_missing=facts.interp,
                  path=f"static check: PT_INTERP {facts.interp} not in image {cell.image}")
    try:
        qemu = None if native else qemu_binary(cell.target.arch)
    except InfraError as e:
        return mk(ran=False, infra=e.what, infra_fix=e.fix)
    facts_ = cell.target.facts      # the image's Env, then the matrix's over it
    env, env_notes = launch_env(dict(image.env), run.env, cell.env, {} if native else facts_.run_env,
                                facts_.run_env_why, DEFAULT_PATH)
    notes = [*image.notes, *env_notes]
    cpu = cell.target.facts.cpu_arg(cell.cpu)
    app = app_path(rootfs)
    command = ([QEMU_IN_ROOT, "-cpu", cpu, app] if qemu else [app]) + list(cell.args)
    emu = f"{os.path.basename(qemu)} -cpu {cpu}" if qemu else "native"
    return Launch(mk, qemu, env, tuple(notes), command, emu, image, app)


def app_path(rootfs: Path) -> str:
    """Where the artifact is in the cell's root: /app, unless the image has an /app of its own (a
    Dockerfile's `WORKDIR /app`), which must stay as the image made it."""
    return APP_BESIDE if os.path.lexists(rootfs / "app") else APP_IN_ROOT


@dataclass(frozen=True)
class Prepared:
    """A cell ready to start: the sandbox argv and how to make its Evidence; close() after it ran."""

    argv: list[str]
    evidence: Callable[..., Evidence]
    emulator: str | None
    notes: tuple[str, ...]
    how: str
    fds: tuple[int, ...] = ()           # handed to bwrap (the seccomp filter)
    hardening: tuple[str, ...] = ()
    children: str | None = None         # how the cell's child processes run (engines/children.py)

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def split_status(code: int | None, sig: int | None) -> tuple[int | None, int | None]:
    """bwrap reports a child killed by signal N as exit 128+N: give back the signal."""
    if code is not None and code > 128 and code - 128 in _SIGNALS:
        return None, code - 128
    return code, sig


_SIGNALS = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 24, 25, 31}
