"""Pool mode: one long-lived container per (image, arch, limits) per concurrent cell, a cell a `docker exec`.

~110 ms a cell instead of ~330 ms for a container each. PID 1 is initelf's helper; after each cell
the slot is made as fresh as a new container (processes left behind killed with `init kill`, /tmp
and /dev/shm unchanged since the start) or it is replaced, so no cell sees what another left.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from docker.errors import APIError, NotFound
from docker.types import Mount
from docker.utils.socket import frames_iter

from ... import platforms, proc
from ...errors import InfraError
from ...plan import Cell, Limits, RunSpec
from ..limits import cgroup_counters
from .common import CELL_DIR, DAEMON_FIX, INIT_IN_ROOT, OCI, Outcome, Retries, close_sock, feed, stopping
from .initelf import helper_elf


class SlotGone(Exception):
    """The pooled container is no longer running (the cell never started in it)."""


# how runc says its init for an exec died before exec'ing the command
_INIT_DIED = ("read init-p", "init-p: connection reset by peer")

SlotKey = tuple[str, str, bool, Limits]     # image tag, qemu, whether /tmp exists, the limits


@dataclass
class Slot:
    """One pooled container, the host directory with the cell's artifact, and its writable dirs."""

    key: SlotKey
    container: Any
    cell_dir: Path
    writable: tuple[str, ...]
    init_pid: int = 0
    cells: int = 0
    # the cgroup counters read just before the container was killed whole (_kill_all), when its init
    # and so its cgroups can no longer be read
    last_counters: tuple[int, int] | None = None


class Host(Protocol):
    """What the pool needs of its engine (DockerEngine): the client, scratch space, and container creation."""

    @property
    def client(self) -> Any: ...
    @property
    def scratch(self) -> Path: ...
    def closing(self) -> bool: ...
    def mounts(self, qemu: str | None) -> list[Any]: ...
    def create_args(self, cell_id: str, mode: str, limits: Limits) -> dict[str, Any]: ...
    def create(self, retries: Retries, tag: str, cell: Cell, command: list[str], **kw: Any) -> Any: ...


class Pool:
    """The pooled containers of one engine; the engine removes the containers themselves on exit."""

    def __init__(self, host: Host) -> None:
        self._host = host
        self._lock = threading.Lock()
        self._idle: dict[SlotKey, list[Slot]] = {}
        self._slots: list[Slot] = []
        self.off: str | None = None         # why the pool cannot be used here, once known

    def clear(self) -> None:
        self._slots.clear()
        self._idle.clear()

    def run(self, cell: Cell, tag: str, artifact: Path, rootfs: Path, qemu: str | None,
            cmd: list[str], env: dict[str, str], run: RunSpec, retries: Retries,
            user: str = "0:0", workdir: str = "/") -> Outcome | None:
        key = (tag, qemu or "", (rootfs / "tmp").is_dir(), run.limits)
        for attempt in (1, 2):
            slot = self._acquire(key, cell, retries)
            if slot is None:
                return None         # the pool is unusable here; the caller runs a container
            keep = False
            try:
                _stage(artifact, slot.cell_dir)
                before = cgroup_counters(slot.init_pid) if slot.init_pid else None
                out = self._exec(slot, cmd, env, run, retries, user, workdir)
                after = slot.last_counters or (cgroup_counters(slot.init_pid) if slot.init_pid else None)
                if before is not None and after is not None:
                    out.oom_killed = after[0] > before[0]
                    out.pids_hit = after[1] > before[1]
                # a cell that hit its pids or memory limit leaves thousands of dying processes the
                # cgroup still counts: the next `docker exec` could not even start runc's init there
                keep = not (out.pids_hit or out.oom_killed) and self._reset(slot, retries)
                slot.cells += 1
                return out
            except SlotGone as e:
                # the container died between cells; the cell never started, so a fresh one is fair
                if attempt == 2:
                    raise InfraError(f"pooled docker containers keep dying: {e}", DAEMON_FIX) from None
            finally:
                self._release(slot, keep)
        raise AssertionError("unreachable")  # pragma: no cover

    def _acquire(self, key: SlotKey, cell: Cell, retries: Retries) -> Slot | None:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        helper = helper_elf(platforms.host_goarch())
        if helper is None:
            self.off = f"no pool init helper for a {platforms.host_goarch()} host"
            return None
        init = self._host.scratch / f"init-{platforms.host_goarch()}"
        with self._lock:
            if not init.exists():
                init.write_bytes(helper)
                init.chmod(0o755)
            n = len(self._slots)
        base = self._host.scratch / f"slot-{n}-{uuid.uuid4().hex[:6]}"
        cell_dir = base / "cell"
        cell_dir.mkdir(parents=True)
        mounts = self._host.mounts(key[1] or None)
        mounts += [Mount(CELL_DIR, str(cell_dir), type="bind", read_only=True),
                   Mount(INIT_IN_ROOT, str(init), type="bind", read_only=True)]
        limits = key[3]
        # bounded tmpfs, as in the local engine; a cell that writes there gets a fresh container next
        tmpfs = {"/tmp": f"mode=1777,size={limits.memory}"} if key[2] else {}
        kw = self._host.create_args(f"pool:{key[0]}", "pool", limits)
        c = self._host.create(retries, key[0], cell, [INIT_IN_ROOT], mounts=mounts, init=False, tmpfs=tmpfs,
                         shm_size=64 << 20, **kw)
        slot = Slot(key, c, cell_dir, ("/tmp", "/dev/shm") if key[2] else ("/dev/shm",))
        with self._lock:
            self._slots.append(slot)
        try:
            retries.call(c.start)
            c.reload()
            slot.init_pid = int(c.attrs.get("State", {}).get("Pid") or 0)
        except BaseException:
            self._discard(slot)
            raise
        return slot

    def _release(self, slot: Slot, keep: bool) -> None:
        if keep and not self._host.closing():
            with self._lock:
                self._idle.setdefault(slot.key, []).append(slot)
        else:
            self._discard(slot)

    def _discard(self, slot: Slot) -> None:
        with contextlib.suppress(Exception):
            slot.container.remove(force=True)
        with self._lock:
            if slot in self._slots:
                self._slots.remove(slot)
        shutil.rmtree(slot.cell_dir.parent, ignore_errors=True)

    def _exec(self, slot: Slot, cmd: list[str], env: dict[str, str], run: RunSpec,
              retries: Retries, user: str = "0:0", workdir: str = "/") -> Outcome:
        api = self._host.client.api
        if self._host.closing() or stopping():
            raise proc.Stopped("xrun is stopping")
        try:
            ex = retries.call(api.exec_create, slot.container.id, cmd, stdin=run.stdin is not None,
                              environment=env, workdir=workdir, user=user)
        except APIError as e:
            if isinstance(e, NotFound) or e.status_code == 409:     # gone, or not running
                raise SlotGone(str(e.explanation or e)) from None
            raise
        eid = ex["Id"]
        t0 = time.monotonic()
        try:
            sock = api.exec_start(eid, socket=True)
        except APIError as e:
            # runc's init for the exec died before it could start the cell's command ("read init-p:
            # connection reset by peer": seen under heavy load, after a neighbour's fork bomb): the cell
            # never ran, so a fresh container is fair, as for a container that died between cells
            if any(s in str(e.explanation or e) for s in _INIT_DIED):
                raise SlotGone(str(e.explanation or e)) from None
            raise
        output = proc.Output(run.limits.output)
        out, err = output.out, output.err
        eof = threading.Event()

        def read() -> None:
            try:
                # past the budget the rest is read and dropped (dockerd stalls other execs while a
                # stream is unread); the main loop below kills the cell's processes
                for stream, data in frames_iter(sock, False):
                    output.feed(out if stream == 1 else err, data)
            except (OSError, ValueError):   # ValueError: the cell's end closed the socket under us
                pass
            finally:
                eof.set()
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if run.stdin is not None:
            feed(sock, run.stdin)
        deadline = t0 + run.timeout
        timed_out = False
        info: dict[str, Any] = {}
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or stopping() or self._host.closing() or output.limited:
                    timed_out = not output.limited
                    break
                # EOF normally comes with the exit; asking every 50 ms too means a child that keeps
                # the pipe open cannot hold the cell past its main process
                got_eof = eof.wait(min(0.05, left))
                info = retries.call(api.exec_inspect, eid)
                if not info.get("Running"):
                    break
                if got_eof:
                    time.sleep(0.002)
            dur = time.monotonic() - t0
            if timed_out or output.limited:
                self._kill_all(slot, retries)
                if stopping() or self._host.closing():
                    raise proc.Stopped("xrun is stopping")
            reader.join(timeout=5)
            for _ in range(500):        # the exit code lands a moment after the stream ends
                info = retries.call(api.exec_inspect, eid)
                if not info.get("Running"):
                    break
                time.sleep(0.002)
        finally:
            close_sock(sock)
        code = info.get("ExitCode")
        text = out.text()
        if code in (126, 127) and any(s in text for s in OCI):
            return Outcome(infra=(f"docker exec failed: {text.strip()[:400]}",
                                   "check the image and the bind-mounted files (artifact, qemu)"))
        return Outcome(int(code) if code is not None else None, text, err.text(), dur, timed_out,
                        output_limited=output.limited)

    def _kill_all(self, slot: Slot, retries: Retries) -> None:
        """SIGKILL every process in the container but its init (the helper's kill mode); where that exec
        cannot even start, the whole container."""
        api = self._host.client.api
        try:
            ex = retries.call(api.exec_create, slot.container.id, [INIT_IN_ROOT, "kill"], user="0:0")
            api.exec_start(ex["Id"], detach=True)
        except APIError as e:
            # a fork bomb holding its pids limit leaves no room for runc's init of the kill exec ("read
            # init-p: connection reset by peer", seen in CI): SIGKILL to the container's PID 1 ends every
            # process of its pid namespace; the slot is then discarded, never reused
            if isinstance(e, NotFound):
                return
            if slot.init_pid:
                slot.last_counters = cgroup_counters(slot.init_pid)
            try:
                retries.call(slot.container.kill)
            except APIError as gone:
                if not (isinstance(gone, NotFound) or gone.status_code == 409):   # 409: already stopped
                    raise
            return
        for _ in range(1000):       # detached: wait for it here, never on a stream
            if not retries.call(api.exec_inspect, ex["Id"]).get("Running"):
                return
            time.sleep(0.005)

    def _leftovers(self, slot: Slot) -> bool:
        """Whether processes outlived the cell: orphans are reparented to the container's init."""
        try:
            kids = Path(f"/proc/{slot.init_pid}/task/{slot.init_pid}/children").read_text()
            return bool(kids.strip())
        except OSError:
            pass
        top = slot.container.top(ps_args="-o pid")
        return len(top.get("Processes") or []) > 1

    def _reset(self, slot: Slot, retries: Retries) -> bool:
        """Make the slot as fresh as a new container; False when it cannot be (then it is replaced)."""
        try:
            if self._leftovers(slot):
                self._kill_all(slot, retries)
                if self._leftovers(slot):
                    return False
            # the tmpfs /tmp and /dev/shm start empty: anything left there means no reuse
            return self._writable_empty(slot)
        except Exception:
            return False

    @staticmethod
    def _writable_empty(slot: Slot) -> bool:
        """Whether the slot's tmpfs /tmp and /dev/shm are still empty, seen through the container
        init's /proc/PID/root (docker's archive endpoint does not see tmpfs mounts). Where this host
        may not look (a non-root user of a root daemon), the slot is never reused."""
        if not slot.init_pid:
            return False
        for path in slot.writable:
            try:
                if os.listdir(f"/proc/{slot.init_pid}/root{path}"):
                    return False
            except OSError:
                return False
        return True


def _stage(artifact: Path, cell_dir: Path) -> None:
    """Put the artifact at <cell_dir>/app (what /app points to) atomically: a hard link, else a copy."""
    tmp = cell_dir / f".app-{uuid.uuid4().hex[:6]}"
    try:
        os.link(artifact.resolve(), tmp)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(artifact.resolve(), tmp)
    os.replace(tmp, cell_dir / "app")

