"""The local engine: each cell in a private root, rootless, no daemon, qemu started explicitly.

Why bubblewrap rather than `unshare` + `chroot`: bwrap sets up the whole sandbox (user, pid, net,
ipc and uts namespaces, a fresh tmpfs root, /proc, a minimal /dev, read-only binds) in one exec
without root; it stays PID 1 of the pid namespace, so qemu never is (qemu as PID 1 ignores its own
fatal signal and hangs after a target SIGILL); --die-with-parent tears the namespace down, and so
every process the binary forked, when we kill it on timeout; and it costs ~3 ms per cell. A hand-made
unshare+chroot needs the same mounts done by a helper inside the namespaces and glibc's execvp turns
ENOEXEC into ENOENT there; we never exec the target through a shell or PATH search either way.

Why an explicit `qemu-<arch>-static -cpu MODEL` rather than binfmt: binfmt cannot pass -cpu, and
cannot emulate a weaker CPU of the host's own arch, so the CPU model would not hold.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import paths, platforms, proc
from ..artifact import inspect, loader_present
from ..errors import InfraError
from ..plan import Cell, Limits, RunSpec
from . import Evidence, emulator, limits, sandbox
from .emulator import QEMU_FIX, qemu_binary
from .foreign import missing_runner, run_foreign
from .limits import cell_limits

QEMU_IN_ROOT = "/.xarch/qemu"
APP_IN_ROOT = "/app"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOSTNAME = sandbox.HOSTNAME
INJECTED_ETC = ("hosts", "resolv.conf", "hostname")

BWRAP_FIX = sandbox.BWRAP_FIX


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
    r = proc.run([q, "-cpu", model.split(",check=")[0], q, "--version"], timeout=30)
    feats = []
    for line in r.stderr.splitlines():
        if "doesn't support requested feature" in line:
            feats.append(line.split("feature:", 1)[-1].strip())
    result = tuple(dict.fromkeys(feats))
    with _probe_lock:
        _probe_cache[key] = result
    return result


class LocalEngine:
    """Runs cells with bubblewrap + qemu-user; nothing outlives the engine."""

    name = "local"

    def __init__(self) -> None:
        self._tmp: Path | None = None

    def __enter__(self) -> LocalEngine:
        proc.disable_core_dumps()
        paths.remove_stale_tmpdirs()
        self._tmp = paths.run_tmpdir("local")
        etc = self._tmp / "etc"
        etc.mkdir()
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                                   f"127.0.1.1\t{HOSTNAME}\n")
        (etc / "resolv.conf").write_text("# xarch cells have no network\n")
        (etc / "hostname").write_text(HOSTNAME + "\n")
        (self._tmp / "empty").mkdir()
        return self

    def __exit__(self, *exc: object) -> None:
        proc.kill_all()
        limits.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @property
    def empty_root(self) -> Path:
        assert self._tmp is not None, "use LocalEngine as a context manager"
        return self._tmp / "empty"

    def preflight(self, cells: tuple[Cell, ...]) -> None:
        """Fail fast (exit 3) when bwrap, user namespaces or a needed qemu is missing."""
        bwrap = proc.which("bwrap", BWRAP_FIX)
        r = proc.run([bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/",
                      "--proc", "/proc", "--die-with-parent", "true"], timeout=30)
        if r.returncode != 0:
            raise InfraError(f"bubblewrap cannot create a sandbox here: {r.stderr.strip()[-300:]}",
                             "allow unprivileged user namespaces (`sudo sysctl -w kernel.unprivileged_userns_clone=1`"
                             " and, on Ubuntu 24.04+, `sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0`),"
                             " or run xrun as root")
        for arch in sorted({c.target.arch for c in cells if c.target.runnable and c.cpu}):
            qemu_binary(arch)
        if (err := missing_runner(tuple(c for c in cells if c.target.runnable))) is not None:
            raise err

    def _root_args(self, rootfs: Path, limits: Limits) -> list[str]:
        """bwrap args laying out the image: read-only binds of its entries on a tmpfs root."""
        args: list[str] = []
        try:
            entries = sorted(os.scandir(rootfs), key=lambda e: e.name)
        except FileNotFoundError:
            entries = []
        for e in entries:
            src, dst = e.path, "/" + e.name
            if e.is_symlink():
                args += ["--symlink", os.readlink(src), dst]
            elif e.name == "etc" and e.is_dir():
                args += ["--tmpfs", "/etc"]
                for sub in sorted(os.scandir(src), key=lambda s: s.name):
                    if sub.name in INJECTED_ETC:
                        continue
                    if sub.is_symlink():
                        args += ["--symlink", os.readlink(sub.path), f"/etc/{sub.name}"]
                    else:
                        args += ["--ro-bind", sub.path, f"/etc/{sub.name}"]
            elif e.name == "tmp" and e.is_dir():
                args += sandbox.tmpfs_args("/tmp", limits.memory)
            elif e.name in ("proc", "dev", "sys"):
                continue
            else:
                args += ["--ro-bind", src, dst]
        assert self._tmp is not None
        for name in INJECTED_ETC:
            args += ["--ro-bind", str(self._tmp / "etc" / name), f"/etc/{name}"]
        return args

    def prepare(self, cell: Cell, artifact: Path, rootfs: Path, run: RunSpec,
                workdir: Path | None = None) -> Evidence | Prepared:
        """The sandbox command for a cell, or the Evidence when a static check already decides it.

        `workdir` (for `xrun exec`) is bound read-only at its own path and made the cwd, with a
        tmpfs /tmp: a `go test` binary reads its package's files and makes temp dirs.
        """
        launch = plan_launch(cell, artifact, rootfs, run)
        if isinstance(launch, Evidence):
            return launch
        seccomp, no_seccomp = sandbox.seccomp_fd()
        try:
            argv = sandbox.base_args(seccomp=seccomp)
        except InfraError as e:
            if seccomp is not None:
                os.close(seccomp)
            return launch.evidence(ran=False, infra=e.what, infra_fix=e.fix)
        argv += self._root_args(rootfs, run.limits)
        argv += [*sandbox.proc_dev_args(), "--ro-bind", str(artifact.resolve()), APP_IN_ROOT]
        if launch.emulator is not None:
            argv += ["--ro-bind", launch.emulator, QEMU_IN_ROOT]
        cwd = "/"
        if workdir is not None:
            argv += [*sandbox.tmpfs_args("/tmp", run.limits.memory), "--ro-bind", str(workdir), str(workdir)]
            cwd = str(workdir)
        argv += ["--chdir", cwd, *sandbox.env_args(launch.env), "--", *launch.command]
        hardening = sandbox.HARDENING + ((no_seccomp,) if no_seccomp else ())
        return Prepared(argv, launch.evidence, launch.emulator, launch.notes, f"bwrap + {launch.emu}",
                        (seccomp,) if seccomp is not None else (), hardening)

    def run_cell(self, cell: Cell, artifact: Path, rootfs: Path, run: RunSpec) -> Evidence:
        if cell.target.os != "linux":       # windows under wine, js/wasip1 under node
            assert self._tmp is not None, "use LocalEngine as a context manager"
            return run_foreign(cell, artifact, run, self._tmp)
        prep = self.prepare(cell, artifact, rootfs, run)
        if isinstance(prep, Evidence):
            return prep
        tcg = () if prep.emulator is None else tcg_missing_features(cell.target.arch, cell.cpu)
        try:
            with cell_limits(run.limits) as lim:
                r = proc.run(prep.argv, stdin=run.stdin, timeout=run.timeout, output_limit=run.limits.output,
                             preexec_fn=lim.preexec, pass_fds=prep.fds)
                outcome = lim.outcome()
        finally:
            prep.close()
        code, sig = split_status(r.returncode, r.signal)
        return prep.evidence(ran=True, exit_code=code, signal=sig, stdout=r.stdout, stderr=r.stderr,
                             duration_s=r.duration_s, timed_out=r.timed_out, emulator=prep.emulator,
                             tcg_missing=tcg, notes=prep.notes, path=prep.how, limits=outcome,
                             output_limited=r.output_limited, hardening=prep.hardening)


@dataclass(frozen=True)
class Launch:
    """What any engine starts for a cell: the command inside the root, its env, and the evidence maker."""

    evidence: Callable[..., Evidence]
    emulator: str | None            # the host's qemu-<arch>-static, to mount at QEMU_IN_ROOT
    env: dict[str, str]
    notes: tuple[str, ...]
    command: list[str]              # argv inside the root: [QEMU_IN_ROOT, -cpu, MODEL, /app, ...] or [/app, ...]
    emu: str                        # "qemu-arm-static -cpu arm1176" or "native"


def plan_launch(cell: Cell, artifact: Path, rootfs: Path, run: RunSpec) -> Evidence | Launch:
    """The static checks every engine makes before starting a cell (in this order), then its launch.

    A missing artifact, a foreign file on the native profile (binfmt on this host would hide it; a
    real machine of the host's arch refuses it) and a PT_INTERP the image lacks are decided here.
    """
    facts = inspect(artifact)
    native = cell.cpu == ""
    cpu_label = "native" if native else cell.cpu

    def mk(**kw: Any) -> Evidence:
        return Evidence(cell.id, cpu_label, facts, **kw)

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
    env = dict(run.env)
    env.update(cell.env)
    notes: list[str] = []
    if not native:
        for k, val in cell.target.facts.run_env.items():
            env[k] = f"{env[k]},{val}" if env.get(k) else val
            notes.append(f"{k}={val} set: {cell.target.facts.run_env_why}")
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOME", "/")
    cpu = cell.target.facts.cpu_arg(cell.cpu)
    command = ([QEMU_IN_ROOT, "-cpu", cpu, APP_IN_ROOT] if qemu else [APP_IN_ROOT]) + list(cell.args)
    emu = f"{os.path.basename(qemu)} -cpu {cpu}" if qemu else "native"
    return Launch(mk, qemu, env, tuple(notes), command, emu)


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
