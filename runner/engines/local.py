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

import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import paths, proc
from ..errors import InfraError
from ..model import Evidence
from ..plan import Cell, Limits, RunSpec
from . import children, cores, execplan, limits, sandbox
from .emulator import qemu_binary
from .execplan import cell_tail
from .launch import (
    DEFAULT_PATH,
    INJECTED_ETC,
    QEMU_IN_ROOT,
    Launch,
    Prepared,
    plan_launch,
    split_status,
    tcg_missing_features,
    write_etc,
)
from .limits import cell_limits

BWRAP_FIX = sandbox.BWRAP_FIX


class LocalEngine:
    """Runs cells with bubblewrap + qemu-user; nothing outlives the engine."""

    name = "local"

    def __init__(self, state: Path | None = None) -> None:
        """`state`: a lasting directory for the files cells name (the injected /etc, the binfmt_misc mount
        point) instead of a temporary one, so a command line can outlive the engine (execplan.py)."""
        self._tmp: Path | None = None
        self._state = state
        self._children: dict[tuple[str, str], children.Children] = {}

    def __enter__(self) -> LocalEngine:
        proc.disable_core_dumps()
        paths.remove_stale_tmpdirs()
        self._tmp = self._state or paths.run_tmpdir("local")
        write_etc(self._tmp)
        (self._tmp / "binfmt").mkdir(exist_ok=True)
        return self

    def __exit__(self, *exc: object) -> None:
        proc.kill_all()
        limits.close()
        if self._tmp is not None and self._state is None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None

    @property
    def empty_root(self) -> Path:
        assert self._tmp is not None, "use LocalEngine as a context manager"
        return self._tmp / "empty"

    def preflight(self, cells: tuple[Cell, ...]) -> None:
        """Fail fast (exit 3) when a needed qemu or foreign runner is missing. bwrap and user namespaces
        are doctor.preflight's (sandbox.probe), which Session runs before any engine starts."""
        for arch in sorted({c.target.arch for c in cells if c.target.runnable and c.cpu}):
            qemu_binary(arch)
        from .foreign import missing_runner

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
                workdir: Path | None = None, core_dir: Path | None = None,
                binds: Sequence[tuple[str, str, bool]] | None = None) -> Evidence | Prepared:
        """The sandbox command for a cell, or the Evidence when a static check already decides it.

        `workdir` (for `xrun exec`) is made the cwd, with a tmpfs /tmp: a `go test` binary reads its
        package's files and makes temp dirs. `binds` (source, path in the cell, writable), in order,
        say what of the host it sees (execwrap.py: the module, a scratch copy of the package, the
        directories go test writes to); without them the workdir alone is bound read-only.
        """
        parts = self._parts(cell, artifact, rootfs, run)
        if isinstance(parts, Evidence):
            return parts
        head, seccomp, seccomp_why, launch, kids = parts
        cwd = launch.image.workdir      # the image's WorkingDir ("/" for xarch's own images)
        bound: list[tuple[str, str, bool]] = []
        if workdir is not None:
            bound = list(binds if binds is not None else ((str(workdir), str(workdir), False),))
            cwd = str(workdir)
        command = list(launch.command)
        if core_dir is not None:        # the second run of a faulted cell: see engines/cores.py
            bound.append((str(core_dir), cores.CORE_DIR, True))
            cwd = cores.CORE_DIR
            if launch.emulator is not None and not cores.has_cores(cell.target.arch):
                command[1:1] = cores.log_args()
        argv = [*head, *cell_tail(str(artifact.resolve()), launch.app, run.limits.memory if workdir else None,
                                  bound, cwd, {**dict(kids.env), **launch.env}, command)]
        if seccomp is not None:
            argv[argv.index(execplan.SECCOMP)] = str(seccomp)
        hardening = sandbox.HARDENING + ((seccomp_why,) if seccomp_why else ())
        return Prepared(argv, launch.evidence, launch.emulator, launch.notes, f"bwrap + {launch.emu}",
                        (seccomp,) if seccomp is not None else (), hardening, kids.how)

    def _parts(self, cell: Cell, artifact: Path, rootfs: Path,
               run: RunSpec) -> Evidence | tuple[list[str], int | None, str | None, Launch, children.Children]:
        """A cell's launch and the head of its command line: bwrap's namespaces, the image's root, /proc,
        /dev and the emulator (with execplan.SECCOMP where the seccomp filter's fd number goes)."""
        launch = plan_launch(cell, artifact, rootfs, run)
        if isinstance(launch, Evidence):
            return launch
        seccomp, seccomp_why = sandbox.seccomp_fd()
        try:
            base = sandbox.base_args(uid=launch.image.uid, gid=launch.image.gid,
                                     seccomp=None if seccomp is None else execplan.SECCOMP)
            kids = self._children_of(cell, base[0])
        except InfraError as e:
            if seccomp is not None:
                os.close(seccomp)
            return launch.evidence(ran=False, infra=e.what, infra_fix=e.fix)
        head = [*kids.prefix, kids.bwrap or base[0], *base[1:], *self._root_args(rootfs, run.limits),
                *sandbox.proc_dev_args()]
        if launch.emulator is not None:
            head += ["--ro-bind", kids.qemu or launch.emulator, QEMU_IN_ROOT]
        return head, seccomp, seccomp_why, launch, kids

    def exec_plan(self, cell: Cell, artifact: Path, rootfs: Path, run: RunSpec) -> Evidence | tuple[dict[str, Any], list[str]]:
        """What execplan.py caches for `xrun exec` (the engine must have a lasting `state`), and the host
        files it names; or the Evidence when a static check decides the cell."""
        parts = self._parts(cell, artifact, rootfs, run)
        if isinstance(parts, Evidence):
            return parts
        head, seccomp, _why, launch, kids = parts
        if seccomp is not None:
            os.close(seccomp)
        prog = sandbox.seccomp_program()
        facts = cell.target.facts
        emulated = launch.emulator is not None
        plan = {"cell": cell.id, "head": head,
                "seccomp": prog.hex() if isinstance(prog, bytes) else None,
                "image_env": dict(launch.image.env), "kids_env": dict(kids.env),
                "arch_env": dict(facts.run_env) if emulated else {}, "arch_env_why": facts.run_env_why or "",
                "default_path": DEFAULT_PATH, "app": launch.app, "tmp_size": run.limits.memory,
                "command": list(launch.command[:len(launch.command) - len(cell.args)]),
                "limits": [run.limits.memory, run.limits.pids, run.limits.output]}
        stamped = [str(rootfs), *(p for p in (launch.emulator, kids.qemu, kids.bwrap) if p),
                   proc.which("bwrap", BWRAP_FIX)]
        return plan, stamped

    def _children_of(self, cell: Cell, bwrap: str) -> children.Children:
        """How the cell's children run (engines/children.py), planned once per arch and model."""
        key = (cell.target.arch, cell.cpu)
        if key not in self._children:
            assert self._tmp is not None
            self._children[key] = children.plan(cell.target.arch, cell.cpu, self._tmp / "binfmt", bwrap)
        return self._children[key]

    def run_cell(self, cell: Cell, artifact: Path, rootfs: Path, run: RunSpec) -> Evidence:
        if cell.target.os != "linux":       # windows under wine, js/wasip1 under node
            assert self._tmp is not None, "use LocalEngine as a context manager"
            from .foreign import run_foreign

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
        ev = prep.evidence(ran=True, exit_code=code, signal=sig, stdout=r.stdout, stderr=r.stderr,
                           duration_s=r.duration_s, timed_out=r.timed_out, emulator=prep.emulator,
                           tcg_missing=tcg, notes=prep.notes, path=prep.how, limits=outcome,
                           output_limited=r.output_limited, hardening=prep.hardening, children=prep.children)
        from .. import forensics

        if forensics.wants_core(ev):
            ev = replace(ev, **self.guest_core(cell, artifact, rootfs, run, signal=ev.signal or 0))
        return ev

    def guest_core(self, cell: Cell, artifact: Path, rootfs: Path, run: RunSpec,
                   workdir: Path | None = None, signal: int = 0,
                   binds: Sequence[tuple[str, str, bool]] | None = None) -> dict[str, Any]:
        """Run a faulted cell once more with a bounded guest core allowed (engines/cores.py):
        the Evidence fields `core` (signal, pc) or `core_note` (why there is none)."""
        if (why := cores.why_not()) is not None:
            return {"core_note": why}
        assert self._tmp is not None
        d = cores.make_dir(self._tmp)
        prep = self.prepare(cell, artifact, rootfs, run, workdir=workdir, core_dir=d, binds=binds)
        if isinstance(prep, Evidence):
            cores.take(d)
            return {"core_note": "no guest core taken: the second run could not start"}
        try:
            with cell_limits(run.limits) as lim:
                def child() -> None:
                    lim.preexec()
                    cores.preexec()
                proc.run(prep.argv, stdin=run.stdin, timeout=run.timeout, output_limit=run.limits.output,
                         preexec_fn=child, pass_fds=prep.fds)
        finally:
            prep.close()
        got = cores.take(d, signal)
        if got is None:
            return {"core_note": f"no guest core: the second run did not die of a fault signal, or "
                                 f"qemu-{cell.target.facts.qemu} writes no cores (nor the riscv64 translation log a last instruction)"}
        return {"core": got}
