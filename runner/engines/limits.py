"""Memory and process limits for one sandboxed cell: a cgroup where this machine lets xrun make one, else rlimits.

Why a cgroup first: it bounds the whole cell (qemu, the program, every child and thread, its tmpfs
/tmp), tells afterwards whether the kernel's OOM killer or the pids limit struck, and lets xrun kill
whatever is left in it. xrun makes one per cell under its own cgroup when the kernel lets it:
cgroup v2 where the memory and pids controllers are delegated to a cgroup xrun may write (a
delegated systemd scope, a container's namespace root, or root), cgroup v1 (the memory and pids
hierarchies, as root). The cell joins it before exec: the child writes "0" ("this process") to the
cgroup's cgroup.procs, so nothing it starts can run outside the limit, not even for a moment.

Otherwise rlimits: RLIMIT_DATA bounds the private writable memory of every process in the cell
(RLIMIT_AS would not do: qemu-user reserves the guest's whole address space up front), and
RLIMIT_NPROC the user's processes (per user, so the bound is "what this user has now + the limit";
the kernel never applies it to uid 0). The evidence says which mechanism held each limit.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

if TYPE_CHECKING:       # `xrun exec` starts cells without loading the model (engines/execplan.py)
    from ..model import LimitOutcome

CGROUP_ROOT = Path("/sys/fs/cgroup")


class LimitNumbers(Protocol):
    """What a cell's limits are made from: plan.Limits, or a cached launch's numbers (execplan.py)."""

    @property
    def memory(self) -> int: ...
    @property
    def pids(self) -> int: ...
    @property
    def output(self) -> int: ...


class _Controller(NamedTuple):
    """Where one controller's cgroups for this process go, and in which cgroup version."""

    version: int
    base: Path                      # our own directory (xarch-<pid>) under which cells get theirs


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(mount point, mount root, fstype, super options) of every cgroup mount."""
    out = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        f, r = left.split(), right.split()
        if len(f) < 5 or len(r) < 3 or r[0] not in ("cgroup", "cgroup2"):
            continue
        out.append((f[4], f[3], r[0], set(r[2].split(","))))
    return out


def _memberships(proc_cgroup: str) -> dict[str, str]:
    """controller (or "" for v2) -> the path /proc/self/cgroup gives."""
    out: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        ctrls = parts[1].split(",") if parts[1] else [""]
        for c in ctrls:
            out[c] = parts[2]
    return out


def _join(mount: str, mount_root: str, path: str) -> Path:
    rel = os.path.relpath(path, mount_root) if path.startswith(mount_root) else path.lstrip("/")
    return Path(mount) / ("" if rel == "." else rel)


def _writable_dir(d: Path) -> bool:
    return d.is_dir() and os.access(d, os.W_OK | os.X_OK)


def _controllers(text: str) -> set[str]:
    return set(text.split())


def _read(p: Path) -> str:
    try:
        return p.read_text()
    except OSError:
        return ""


def detect(mountinfo: str, proc_cgroup: str, tag: str) -> dict[str, _Controller]:
    """Where memory and pids cgroups can be made for cells ({} when nowhere): pure but for stat/access."""
    mounts = _mounts(mountinfo)
    member = _memberships(proc_cgroup)
    found: dict[str, _Controller] = {}
    for mnt, root, fstype, _opts in mounts:
        if fstype != "cgroup2" or "" not in member:
            continue
        own = _join(mnt, root, member[""])
        # the no-internal-processes rule: our own cgroup holds us, so cells go beside it (its parent
        # must delegate both controllers), unless ours is a namespace root that already delegates them
        for parent in (own.parent, own):
            enabled = _controllers(_read(parent / "cgroup.subtree_control"))
            if {"memory", "pids"} <= enabled and _writable_dir(parent) and parent.is_relative_to(mnt):
                base = parent / f"xarch-{tag}"
                return {"memory": _Controller(2, base), "pids": _Controller(2, base)}
    for ctrl in ("memory", "pids"):
        for mnt, root, fstype, opts in mounts:
            if fstype == "cgroup" and ctrl in opts and ctrl in member:
                own = _join(mnt, root, member[ctrl])
                if _writable_dir(own):
                    found[ctrl] = _Controller(1, own / f"xarch-{tag}")
                break
    return found


class _Cgroups:
    """This process's cgroup bases, made on first use and removed at exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ctrls: dict[str, _Controller] | None = None
        self._n = 0

    def controllers(self) -> dict[str, _Controller]:
        with self._lock:
            if self._ctrls is None:
                self._ctrls = {}
                if os.environ.get("XARCH_LIMITS") != "rlimit":    # tests force the fallback
                    try:
                        mi = Path("/proc/self/mountinfo").read_text()
                        pc = Path("/proc/self/cgroup").read_text()
                    except OSError:
                        mi = pc = ""
                    for ctrl, c in detect(mi, pc, str(os.getpid())).items():
                        try:
                            c.base.mkdir(exist_ok=True)
                            if c.version == 2:
                                (c.base / "cgroup.subtree_control").write_text("+memory +pids")
                        except OSError:
                            continue
                        self._ctrls[ctrl] = c
                    _remove_stale({c.base.parent for c in self._ctrls.values()})
            return self._ctrls

    def next_name(self) -> str:
        with self._lock:
            self._n += 1
            return f"cell-{self._n}"

    def close(self) -> None:
        with self._lock:
            ctrls, self._ctrls = self._ctrls or {}, None
        for c in {c.base for c in ctrls.values()}:
            _remove_cgroup(c)


_CGROUPS = _Cgroups()


def close() -> None:
    """Remove this process's cgroups (engines call it on exit)."""
    _CGROUPS.close()


def _pids_in(d: Path) -> list[int]:
    return [int(x) for x in _read(d / "cgroup.procs").split() if x.isdigit()]


def _remove_cgroup(d: Path) -> None:
    """Kill what is left in a cgroup tree and remove it (children first)."""
    if not d.is_dir():
        return
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        _empty_and_rmdir(sub)
    _empty_and_rmdir(d)


def _empty_and_rmdir(d: Path) -> None:
    kill = d / "cgroup.kill"
    for _ in range(50):
        pids = _pids_in(d)
        if not pids:
            break
        if kill.exists():
            with contextlib.suppress(OSError):
                kill.write_text("1")
        else:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    with contextlib.suppress(OSError):
        d.rmdir()


def _remove_stale(parents: set[Path]) -> None:
    """cgroups of xrun processes that died (kill -9) without removing theirs."""
    for parent in parents:
        for d in parent.glob("xarch-*"):
            tag = d.name.removeprefix("xarch-")
            if tag.isdigit() and int(tag) != os.getpid() and not Path(f"/proc/{tag}").exists():
                _remove_cgroup(d)


def _count_user_processes(uid: int) -> int:
    n = 0
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            with contextlib.suppress(OSError):
                if p.stat().st_uid == uid:
                    n += 1
    return n


class CellLimits:
    """The limits of one cell: `preexec` joins them in the child; `outcome()` reads what struck."""

    def __init__(self, limits: LimitNumbers) -> None:
        self.limits = limits
        self._dirs: dict[str, tuple[_Controller, Path]] = {}
        self._fds: list[int] = []
        ctrls = _CGROUPS.controllers()
        name = _CGROUPS.next_name()
        for ctrl, c in ctrls.items():
            d = c.base / name        # cgroup v2: one directory holds both controllers
            try:
                d.mkdir(exist_ok=True)
                self._configure(ctrl, c, d)
            except OSError:
                continue
            self._dirs[ctrl] = (c, d)
        for d in {d for _c, d in self._dirs.values()}:
            self._fds.append(os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
        self._data = None if "memory" in self._dirs else limits.memory
        self._nproc: int | None = None
        if "pids" not in self._dirs and os.getuid() != 0:
            self._nproc = _count_user_processes(os.getuid()) + limits.pids

    def _configure(self, ctrl: str, c: _Controller, d: Path) -> None:
        lim = self.limits
        if ctrl == "memory":
            if c.version == 2:
                (d / "memory.max").write_text(str(lim.memory))
                if (d / "memory.swap.max").exists():
                    (d / "memory.swap.max").write_text("0")
            else:
                (d / "memory.limit_in_bytes").write_text(str(lim.memory))
                if (d / "memory.memsw.limit_in_bytes").exists():
                    (d / "memory.memsw.limit_in_bytes").write_text(str(lim.memory))
        else:
            (d / "pids.max").write_text(str(lim.pids))

    def preexec(self) -> None:
        """In the child, before exec: join the cgroups, or set the rlimits (no allocation, no locks)."""
        for fd in self._fds:
            os.write(fd, b"0")
        if self._data is not None:
            resource.setrlimit(resource.RLIMIT_DATA, (self._data, self._data))
        if self._nproc is not None:
            resource.setrlimit(resource.RLIMIT_NPROC, (self._nproc, self._nproc))

    def outcome(self) -> LimitOutcome:
        oom = pids_hit = False
        peak = None
        if "memory" in self._dirs:
            c, d = self._dirs["memory"]
            oom = _oom_kills(c.version, d) > 0
            peak = _int(_read(d / ("memory.peak" if c.version == 2 else "memory.max_usage_in_bytes")))
        if "pids" in self._dirs:
            pids_hit = _pids_refusals(self._dirs["pids"][1]) > 0
        return outcome_of(self.limits, {ctrl: c.version for ctrl, (c, _d) in self._dirs.items()},
                          self._nproc is not None, oom, pids_hit, peak)

    def close(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        for d in {d for _c, d in self._dirs.values()}:
            _empty_and_rmdir(d)


def outcome_of(limits: LimitNumbers, cgroups: dict[str, int], nproc: bool, oom: bool, pids_hit: bool,
               peak: int | None) -> LimitOutcome:
    """What held a cell's limits and what struck, worded: `cgroups` is controller -> cgroup version of
    the cell's own cgroups, `nproc` whether RLIMIT_NPROC was set (CellLimits, or the compiled
    launcher's record of its run: engines/launcher/run.go)."""
    from ..model import LimitOutcome
    from ..plan import Limits

    def mechanism(ctrl: str, rlimit: str, why_not: str | None) -> str:
        if ctrl in cgroups:
            return f"cgroup v{cgroups[ctrl]}"
        return rlimit if why_not is None else f"not enforced: {why_not}"

    lim = Limits(memory=limits.memory, pids=limits.pids, output=limits.output)
    pid_why = None if nproc or "pids" in cgroups else "no writable cgroup, and RLIMIT_NPROC does not apply to uid 0"
    mechs = {mechanism(c, "rlimit", None) for c in ("memory", "pids")}
    return LimitOutcome(limits=lim, memory_by=mechanism("memory", "RLIMIT_DATA", None),
                        pids_by=mechanism("pids", "RLIMIT_NPROC, per user", pid_why),
                        mechanism=" + ".join(sorted(mechs)), oom_killed=oom, pids_hit=pids_hit, memory_peak=peak)


def _field(text: str, key: str) -> int:
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == key and v.strip().isdigit():
            return int(v)
    return 0


def _oom_kills(version: int, d: Path) -> int:
    """How often the OOM killer struck in the memory cgroup d."""
    return _field(_read(d / ("memory.events" if version == 2 else "memory.oom_control")), "oom_kill")


def _pids_refusals(d: Path) -> int:
    """How often the pids cgroup d refused a fork or a thread."""
    return _field(_read(d / "pids.events"), "max")


def _int(text: str) -> int | None:
    t = text.strip()
    return int(t) if t.isdigit() else None


@contextlib.contextmanager
def cell_limits(limits: LimitNumbers) -> Iterator[CellLimits]:
    """The limits of one cell, removed (and anything left in them killed) afterwards."""
    cl = CellLimits(limits)
    try:
        yield cl
    finally:
        cl.close()


def cgroup_counters(pid: int) -> tuple[int, int] | None:
    """(OOM kills, pids-limit refusals) of the cgroups a host pid is in (v1 or v2); None when unreadable.

    The docker engine compares them before and after a pooled cell: docker reports an OOM kill only for
    a container's main process, never for a `docker exec`, and no pids-limit refusal at all.
    """
    try:
        pc = Path(f"/proc/{pid}/cgroup").read_text()
        mi = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    member = _memberships(pc)
    oom = pids = None
    for mnt, root, fstype, opts in _mounts(mi):
        if fstype == "cgroup2" and "" in member:
            d = _join(mnt, root, member[""])
            if (d / "memory.events").exists():
                oom = _oom_kills(2, d)
            if (d / "pids.events").exists():
                pids = _pids_refusals(d)
        elif fstype == "cgroup" and "memory" in opts and "memory" in member:
            d = _join(mnt, root, member["memory"])
            if (d / "memory.oom_control").exists():
                oom = _oom_kills(1, d)
        elif fstype == "cgroup" and "pids" in opts and "pids" in member:
            d = _join(mnt, root, member["pids"])
            if (d / "pids.events").exists():
                pids = _pids_refusals(d)
    if oom is None and pids is None:
        return None
    return oom or 0, pids or 0

