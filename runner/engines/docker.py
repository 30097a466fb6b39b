"""The docker engine: each cell in a container of its image, qemu started explicitly with -cpu.

It keeps the local engine's semantics so both engines give the same verdicts: the same static
checks before running (PT_INTERP against the image, the native profile refusing a foreign file),
the same injected /etc/hosts, /etc/resolv.conf and /etc/hostname, the same environment (PATH,
HOME=/, the arch's run_env such as GODEBUG for 386, recorded as a note), the artifact at /app, a
writable /tmp only when the image has one, no network, and `qemu-<arch>-static -cpu MODEL` bind-mounted
from the host and started explicitly (binfmt cannot pass -cpu). Docker itself adds HOSTNAME to the
environment, /.dockerenv and /sys; nothing classified depends on those.

Images are imported from the image rootfs directory as a docker-archive whose config carries the
architecture and variant (engine 20.10 ignores `docker import --platform`, and a wrong architecture
makes `--platform` try to pull), tagged by content so a later run reuses them.

Two modes, with the same verdicts (tests/e2e/test_docker_engine.py runs every one through both):
- "container": one `docker run --init --read-only --network none` per cell. tini is PID 1,
  so qemu never is (qemu as PID 1 ignores its own fatal signal and hangs after a target SIGILL), and
  a child killed by signal N shows as exit 128+N, which maps back to the signal as bwrap's does.
- "pool" (default): one long-lived container per (image, arch) per concurrent cell, each cell a
  `docker exec` (~110 ms a cell instead of ~330 ms).
  PID 1 is a 200-byte helper that ignores SIGCHLD (so the kernel reaps orphans) and, run as
  `init kill`, does kill(-1, SIGKILL): everything in the container but PID 1 dies, which is how a
  timeout kills the whole tree and how processes a cell leaves behind are removed before the next
  cell. /tmp and /dev/shm are host directories emptied between cells; a container that cannot be made
  fresh is replaced. Hosts without a helper (other than amd64/arm64) fall back to "container".
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import shutil
import socket
import struct
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import docker
import filelock
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import LogConfig, Mount, Ulimit
from docker.utils.socket import frames_iter
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from .. import paths, platforms, proc
from ..errors import InfraError
from ..plan import Cell, Limits, RunSpec, size_text
from . import Evidence, emulator, sandbox
from . import local as _local
from .foreign import run_foreign
from .limits import LimitOutcome, cgroup_counters

MODES = ("container", "pool")
DEFAULT_MODE = "pool"               # every parity test passes in both modes; pool is ~3x cheaper
MODE_ENV = "XARCH_DOCKER_MODE"

LAYOUT = "1"                        # bump when the image layout below changes: it is part of the tag
CELL_DIR = "/.xarch/cell"           # the artifact lives here; /app is a symlink into it
APP_TARGET = f"{CELL_DIR}/app"
INIT_IN_ROOT = "/.xarch/init"
QEMU_IN_ROOT = _local.QEMU_IN_ROOT
APP = _local.APP_IN_ROOT
LABEL_RUN, LABEL_CELL, LABEL_OWNER, LABEL_MODE = "xarch.run", "xarch.cell", "xarch.owner", "xarch.mode"
STALE_S = 60.0                      # a foreign run's exited container older than this is garbage
WAIT_SLICE_S = 0.5                  # how often a waiting cell looks at Ctrl-C

DAEMON_FIX = ("start the docker daemon: `sudo systemctl start docker` (or `sudo dockerd &` where systemd "
              "is not running), or use --engine local")
INSTALL_FIX = ("install docker: `sudo apt-get install docker.io` and start it with `sudo systemctl start "
               "docker` (or `sudo dockerd &`), or use --engine local")

HARDENING = ("no capabilities (--cap-drop ALL), no new privileges", "xarch's seccomp filter (as the local "
             "engine's: mount, ptrace of others, keyrings, namespaces, modules, bpf, ... refused)",
             "read-only root filesystem, network none")

_TINI_EXEC = re.compile(r"^\[FATAL tini \(\d+\)\] exec (\S+) failed: (.+)$")
_RUNC_EXEC = re.compile(r"^exec (\S+): (.+)$")
_OCI = ("OCI runtime exec failed", "OCI runtime create failed", "OCI runtime start failed")

T = TypeVar("T")


# -- helpers -------------------------------------------------------------------------------------

def _stopping() -> bool:
    """Ctrl-C was pressed: proc.stop() was called (waits poll this to drain the worker pool fast)."""
    return proc.stopping()


def _transient(exc: BaseException) -> bool:
    """Daemon hiccups worth another attempt; never a verdict, never a deterministic runtime error."""
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(exc, APIError) and not isinstance(exc, NotFound):
        text = str(exc.explanation or exc)
        if any(s in text for s in _OCI):
            return False        # runc refused the container: the same every time
        code = exc.status_code or 0
        return code >= 500 or (code == 409 and "already in use" in text)
    return False


class _Retries:
    """Retries one daemon call on transient failures and counts the extra attempts for the evidence."""

    ATTEMPTS = 4

    def __init__(self) -> None:
        self.count = 0

    def _counted(self, state: RetryCallState) -> None:
        self.count += 1

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        for attempt in Retrying(stop=stop_after_attempt(self.ATTEMPTS),
                                wait=wait_exponential(multiplier=0.2, max=2.0),
                                retry=retry_if_exception(_transient), before_sleep=self._counted,
                                reraise=True):
            with attempt:
                return fn(*args, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover


def oci_platform(cell: Cell) -> tuple[str, str | None]:
    """(OCI arch, variant) of the image a cell runs in."""
    a = cell.target.facts
    return a.oci, a.oci_variant(cell.target.level)


def _tree_digest(root: Path) -> str:
    """A digest of a directory tree's names, modes, owners, sizes, mtimes and link targets."""
    h = hashlib.sha256()
    if root.is_dir():
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(dirs + files):
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                link = os.readlink(p) if os.path.islink(p) else ""
                h.update(f"{os.path.relpath(p, root)}\0{st.st_mode}\0{st.st_uid}\0{st.st_gid}\0{st.st_size}\0"
                         f"{st.st_mtime_ns}\0{link}\n".encode())
    return h.hexdigest()


def _skip_in_layer(rel: str) -> bool:
    """Entries the container gets from elsewhere, as in the local engine's layout."""
    top = rel.split("/", 1)[0]
    if top in ("app", ".xarch", "proc", "dev", "sys"):
        return True
    return rel in {f"etc/{n}" for n in _local.INJECTED_ETC}


def _write_layer(root: Path, out: io.BufferedIOBase) -> None:
    """The image rootfs as an uncompressed layer tar, plus /app -> the cell's artifact."""
    def norm(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uname = ti.gname = ""
        return ti

    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        if root.is_dir():
            for dirpath, dirs, files in os.walk(root):
                dirs.sort()
                for name in sorted(dirs + files):
                    full = os.path.join(dirpath, name)
                    rel = os.path.relpath(full, root)
                    if _skip_in_layer(rel):
                        if name in dirs:
                            dirs.remove(name)
                        continue
                    tar.add(full, arcname=rel, recursive=False, filter=norm)
        link = tarfile.TarInfo("app")
        link.type, link.linkname, link.mode = tarfile.SYMTYPE, APP_TARGET, 0o777
        tar.addfile(link)


def _write_archive(root: Path, tag: str, arch: str, variant: str | None, labels: Mapping[str, str],
                   dest: Path) -> None:
    """A `docker save`-format archive of one layer whose config names the architecture."""
    layer = dest.with_suffix(".layer")
    with open(layer, "wb") as f:
        _write_layer(root, f)
    h = hashlib.sha256()
    with open(layer, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    diff = h.hexdigest()
    cfg: dict[str, Any] = {
        "architecture": arch, "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Env": [f"PATH={_local.DEFAULT_PATH}"], "WorkingDir": "/", "Labels": dict(labels)},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff}"]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "xarch: image rootfs imported"}],
    }
    if variant:
        cfg["variant"] = variant
    cfg_bytes = json.dumps(cfg, sort_keys=True).encode()
    cfg_name = hashlib.sha256(cfg_bytes).hexdigest() + ".json"
    manifest = json.dumps([{"Config": cfg_name, "RepoTags": [tag], "Layers": [f"{diff}/layer.tar"]}]).encode()
    with tarfile.open(dest, "w") as tar:
        tar.add(str(layer), arcname=f"{diff}/layer.tar")
        for name, data in ((cfg_name, cfg_bytes), ("manifest.json", manifest)):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    layer.unlink()


def _elf(machine: int, code: bytes) -> bytes:
    """A static ELF64 LSB executable of one R+X segment holding `code`."""
    base, hdr = 0x400000, 64 + 56
    total = hdr + len(code)
    eh = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, b"\0" * 7, 2, machine, 1,
                     base + hdr, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    ph = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x1000)
    return eh + ph + code


# The pool's PID 1, hand-assembled because scratch images have no `sleep` and no shell.
# argc == 1: rt_sigaction(SIGCHLD, SIG_IGN) (the kernel then reaps orphans), then pause()/ppoll() forever.
# argc > 1:  kill(-1, SIGKILL) (every process of the container but PID 1 and itself), exit(0).
_SIGACT_IGN = struct.pack("<QQQQ", 1, 0, 0, 0)
_HELPER_CODE = {
    "amd64": (62, bytes.fromhex(
        "488b0424" "4883f801" "7524"                        # mov rax,[rsp]; cmp rax,1; jne kill
        "488d3537000000" "bf11000000" "31d2" "41ba08000000"  # lea rsi,[act]; edi=17; edx=0; r10d=8
        "b80d000000" "0f05"                                  # rt_sigaction
        "b822000000" "0f05" "ebf7"                           # loop: pause; jmp loop
        "bfffffffff" "be09000000" "b83e000000" "0f05"        # kill: kill(-1, 9)
        "31ff" "b83c000000" "0f05") + _SIGACT_IGN),          # exit(0)
    "arm64": (183, b"".join(struct.pack("<I", w) for w in (
        0xF94003E0, 0xF100041F, 0x540001C1,                  # ldr x0,[sp]; cmp x0,#1; b.ne kill
        0xD2800220, 0x10000281, 0xD2800002, 0xD2800103,      # x0=17; adr x1,act; x2=0; x3=8
        0xD28010C8, 0xD4000001,                              # rt_sigaction
        0xD2800000, 0xD2800001, 0xD2800002, 0xD2800003,      # loop: ppoll(0,0,0,0)
        0xD2800928, 0xD4000001, 0x17FFFFFA,                  #       b loop
        0x92800000, 0xD2800121, 0xD2801028, 0xD4000001,      # kill: kill(-1, 9)
        0xD2800000, 0xD2800BA8, 0xD4000001, 0)) + _SIGACT_IGN),  # exit(0); pad to 8
}


def helper_elf(goarch: str) -> bytes | None:
    """The pool's init/killer helper for the daemon's arch, or None when there is none."""
    spec = _HELPER_CODE.get(goarch)
    return _elf(*spec) if spec else None


def _pid_start(pid: int) -> str | None:
    """The start time of a pid (field 22 of /proc/PID/stat), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _pidns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "?"


def owner_label() -> str:
    """Who owns a container: host, pid namespace, pid and its start time."""
    return f"{socket.gethostname()}|{_pidns()}|{os.getpid()}|{_pid_start(os.getpid())}"


def owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host and pid namespace; None when it is someone else's."""
    parts = owner.split("|")
    if len(parts) != 4 or parts[0] != socket.gethostname() or parts[1] != _pidns():
        return None
    try:
        pid = int(parts[2])
    except ValueError:
        return False
    return _pid_start(pid) == parts[3]


def _exec_failure(err: str, out: str) -> tuple[str, str] | None:
    """(path, reason) when the runtime, not the program, printed that it could not exec a file."""
    if out.strip():
        return None
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    if len(lines) != 1:
        return None
    m = _TINI_EXEC.match(lines[0]) or _RUNC_EXEC.match(lines[0])
    return (m.group(1), m.group(2)) if m else None


@dataclass
class _Outcome:
    """What running one command in docker left, before it becomes Evidence."""

    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    timed_out: bool = False
    infra: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    oom_killed: bool = False
    pids_hit: bool = False
    output_limited: bool = False


class _SlotGone(Exception):
    """The pooled container is no longer running (the cell never started in it)."""


_SlotKey = tuple[str, str, bool, Limits]    # image tag, qemu, whether /tmp exists, the limits


@dataclass
class _Slot:
    """One pooled container, the host directory with the cell's artifact, and its writable dirs."""

    key: _SlotKey
    container: Any
    cell_dir: Path
    writable: tuple[str, ...]
    init_pid: int = 0
    cells: int = 0


# -- the engine ----------------------------------------------------------------------------------

class DockerEngine:
    """Runs cells in docker containers with qemu -cpu MODEL; removes every container it made on exit.

    `mode` is "pool" (docker exec into a long-lived container per image and arch, the default) or
    "container" (one container per cell); None reads $XARCH_DOCKER_MODE. `client` is for tests.
    """

    name = "docker"

    def __init__(self, mode: str | None = None, *, client: Any = None) -> None:
        mode = mode or os.environ.get(MODE_ENV) or DEFAULT_MODE
        if mode not in MODES:
            raise InfraError(f"unknown docker engine mode '{mode}'", f"use one of {', '.join(MODES)}")
        self.mode = mode
        self.run_id = uuid.uuid4().hex[:12]
        self._client: Any = client
        self._own_client = client is None
        self._connect_error: InfraError | None = None
        self._tmp: Path | None = None
        self._owner = owner_label()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._images: dict[tuple[str, str, str | None, str], str] = {}
        self._image_locks: dict[str, threading.Lock] = {}
        self._idle: dict[_SlotKey, list[_Slot]] = {}
        self._slots: list[_Slot] = []
        self._pool_off: str | None = None       # why the pool cannot be used here, once known
        self.removed_leftovers = 0

    # -- lifecycle --

    def __enter__(self) -> DockerEngine:
        proc.disable_core_dumps()
        self._tmp = paths.run_tmpdir("docker")
        etc = self._tmp / "etc"
        etc.mkdir()
        # the same files the local engine binds, so name resolution and hostname behave the same
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                                   f"127.0.1.1\t{_local.HOSTNAME}\n")
        (etc / "resolv.conf").write_text("# xarch cells have no network\n")
        (etc / "hostname").write_text(_local.HOSTNAME + "\n")
        (self._tmp / "empty").mkdir()
        paths.remove_stale_tmpdirs()
        try:
            self._connect()
            self.removed_leftovers = self.remove_leftovers()
        except InfraError as e:
            self._connect_error = e     # preflight reports it; the engine still cleans up on exit
        except (DockerException, requests.exceptions.RequestException) as e:
            self._connect_error = self._daemon_error(e)
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        if self._client is not None:
            with contextlib.suppress(Exception):
                mine = [c["Id"] for c in self._list(f"{LABEL_RUN}={self.run_id}")]

                def remove(cid: str) -> None:
                    with contextlib.suppress(Exception):
                        self._client.api.remove_container(cid, force=True)
                # a force-remove of a running container takes ~50-100 ms; pools hold a few dozen
                with ThreadPoolExecutor(max_workers=8) as pool:
                    list(pool.map(remove, mine))
            if self._own_client:
                with contextlib.suppress(Exception):
                    self._client.close()
            self._client = None
        self._slots.clear()
        self._idle.clear()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    @property
    def empty_root(self) -> Path:
        assert self._tmp is not None, "use DockerEngine as a context manager"
        return self._tmp / "empty"

    @property
    def client(self) -> Any:
        """The docker SDK client (None until entered, or when the daemon was unreachable)."""
        return self._client

    def _connect(self) -> None:
        if self._client is None:
            try:
                self._client = docker.from_env(max_pool_size=64)
            except DockerException as e:
                raise self._daemon_error(e) from None
        try:
            _Retries().call(self._client.ping)
        except Exception as e:
            raise self._daemon_error(e) from None

    @staticmethod
    def _daemon_error(e: BaseException) -> InfraError:
        text = str(e)
        if shutil.which("dockerd") is None and shutil.which("docker") is None:
            return InfraError("docker is not installed", INSTALL_FIX)
        if "Permission denied" in text:
            return InfraError(f"this user may not use the docker daemon ({text[:200]})",
                              "sudo usermod -aG docker $USER (then log in again), or run xrun with sudo")
        return InfraError(f"the docker daemon is not reachable ({text[:200]})", DAEMON_FIX)

    def _list(self, label: str) -> list[dict[str, Any]]:
        """Containers with a label, from the list endpoint alone: the SDK's list() inspects each one
        and fails when another run removes one in between."""
        return list(_Retries().call(self._client.api.containers, all=True, filters={"label": label}))

    def remove_leftovers(self) -> int:
        """Remove containers of earlier runs that crashed (owner dead, or foreign, exited and stale)."""
        n = 0
        for c in self._list(LABEL_RUN):
            labels = c.get("Labels") or {}
            if labels.get(LABEL_RUN) == self.run_id:
                continue
            alive = owner_alive(labels.get(LABEL_OWNER, ""))
            if alive is None:
                age = time.time() - float(c.get("Created") or 0)
                alive = c.get("State") == "running" or age < STALE_S
            if not alive:
                with contextlib.suppress(DockerException):
                    self._client.api.remove_container(c["Id"], force=True)
                    n += 1
        return n

    def preflight(self, cells: tuple[Cell, ...]) -> None:
        """Fail fast (exit 3) when the daemon is down or a needed qemu is missing."""
        if self._connect_error is not None:
            raise self._connect_error
        if self._client is None:
            self._connect()
        for arch in sorted({c.target.arch for c in cells if c.target.runnable and c.cpu}):
            emulator.qemu_binary(arch)

    # -- images --

    def image_for(self, cell: Cell, rootfs: Path, retries: _Retries | None = None) -> str:
        """The tag of the imported image for this cell's image and platform, importing it once."""
        arch, variant = oci_platform(cell)
        key = (str(rootfs), arch, variant, cell.image)
        with self._lock:
            tag = self._images.get(key)
            if tag is not None:
                return tag
        r = retries or _Retries()
        h = hashlib.sha256(f"{LAYOUT}\0{cell.image}\0{arch}\0{variant}\0{_tree_digest(rootfs)}".encode())
        digest = h.hexdigest()
        repo = "xarch/" + re.sub(r"[^a-z0-9._-]", "-", cell.image.lower())
        tag = f"{repo}:{arch}{'-' + variant if variant else ''}-{digest[:12]}"
        with self._lock:
            tlock = self._image_locks.setdefault(tag, threading.Lock())
        with tlock:
            if not self._has_image(tag, r):
                locks = _cache_dir() / "locks"
                locks.mkdir(parents=True, exist_ok=True)
                # another xrun (or an xdist worker) may be importing the same image right now
                with filelock.FileLock(str(locks / f"{digest[:24]}.lock"), timeout=600):
                    if not self._has_image(tag, r):
                        self._import(rootfs, tag, arch, variant, cell.image, digest, r)
        with self._lock:
            self._images[key] = tag
        return tag

    def _has_image(self, tag: str, r: _Retries) -> bool:
        try:
            r.call(self._client.images.get, tag)
            return True
        except ImageNotFound:
            return False

    def _import(self, rootfs: Path, tag: str, arch: str, variant: str | None, image: str, digest: str,
                r: _Retries) -> None:
        assert self._tmp is not None
        dest = self._tmp / f"import-{digest[:12]}.tar"
        labels = {"xarch.image": image, "xarch.digest": digest,
                  "xarch.platform": f"linux/{arch}" + (f"/{variant}" if variant else "")}
        _write_archive(rootfs, tag, arch, variant, labels, dest)
        try:
            def load() -> None:
                with open(dest, "rb") as f:
                    self._client.images.load(f)
            r.call(load)
        finally:
            dest.unlink(missing_ok=True)

    # -- cells --

    def run_cell(self, cell: Cell, artifact: Path, rootfs: Path, run: RunSpec) -> Evidence:
        if cell.target.os != "linux":       # no container for these: the same wine/node sandbox as local
            assert self._tmp is not None, "use DockerEngine as a context manager"
            return run_foreign(cell, artifact, run, self._tmp)
        launch = _local.plan_launch(cell, artifact, rootfs, run)   # the local engine's checks, verbatim
        if isinstance(launch, Evidence):
            return launch
        mk = launch.evidence
        if self._connect_error is not None:
            return mk(ran=False, infra=self._connect_error.what, infra_fix=self._connect_error.fix)
        qemu = launch.emulator
        tcg = () if qemu is None else _local.tcg_missing_features(cell.target.arch, cell.cpu)
        env, notes, cmd, emu = launch.env, list(launch.notes), launch.command, launch.emu

        retries = _Retries()
        extra: dict[str, str] = {}
        try:
            tag = self.image_for(cell, rootfs, retries)
            out = None
            if self.mode == "pool" and self._pool_off is None:
                out = self._run_pooled(cell, tag, artifact, rootfs, qemu, cmd, env, run, retries)
            if out is not None:
                mode, how = "pool", f"docker exec in a pooled container of {tag} + {emu}"
            else:
                if self.mode == "pool":
                    extra["docker_pool_off"] = self._pool_off or "?"
                out = self._run_container(cell, tag, artifact, rootfs, qemu, cmd, env, run, retries)
                mode, how = "container", f"docker container of {tag} (--init, read-only, network none) + {emu}"
        except InfraError as e:
            return mk(ran=False, infra=e.what, infra_fix=e.fix, extra=self._extra(extra, retries))
        except (DockerException, requests.exceptions.RequestException, filelock.Timeout) as e:
            return mk(ran=False, infra=f"docker failed: {str(e)[:300]}", infra_fix=DAEMON_FIX,
                      extra=self._extra(extra, retries))
        extra["docker_mode"] = mode
        extra["docker_image"] = tag
        notes += out.notes
        if out.infra is not None:
            return mk(ran=False, infra=out.infra[0], infra_fix=out.infra[1], path=how,
                      extra=self._extra(extra, retries))

        code: int | None = out.exit_code
        sig: int | None = None
        failed = _exec_failure(out.stderr, out.stdout) if code in (1, 126, 127) else None
        if failed is not None and failed[0] in (APP, APP_TARGET) and "exec format error" in failed[1].lower():
            # runc could not exec /app (the static checks make this rare): the program never ran
            return mk(ran=False, stderr=out.stderr, path=f"{how}: {out.stderr.strip()}", notes=tuple(notes),
                      extra=self._extra(extra, retries))
        if failed is not None and failed[0] == QEMU_IN_ROOT:
            return mk(ran=False, infra=f"{qemu} cannot start inside the image: {failed[1]}",
                      infra_fix=emulator.QEMU_FIX + " (the statically linked build)", path=how,
                      extra=self._extra(extra, retries))
        if code is not None and code > 128 and code - 128 in _local._SIGNALS:
            # tini and docker exec report a child killed by signal N as 128+N, like bwrap
            sig, code = code - 128, None
        lim = run.limits
        outcome = LimitOutcome(memory=f"{size_text(lim.memory)} (docker --memory, no swap)",
                               pids=f"{lim.pids} (docker --pids-limit)",
                               output=f"{size_text(lim.output)} (xrun stops the cell)", mechanism="docker",
                               oom_killed=out.oom_killed, pids_hit=out.pids_hit)
        return mk(ran=True, exit_code=code, signal=sig, stdout=out.stdout, stderr=out.stderr,
                  duration_s=out.duration_s, timed_out=out.timed_out, emulator=qemu, tcg_missing=tcg,
                  notes=tuple(notes), path=how, extra=self._extra(extra, retries), limits=outcome,
                  output_limited=out.output_limited, hardening=HARDENING)

    @staticmethod
    def _extra(extra: dict[str, str], retries: _Retries) -> dict[str, str]:
        if retries.count:
            extra["docker_retries"] = str(retries.count)
        return extra

    def _mounts(self, qemu: str | None) -> list[Any]:
        assert self._tmp is not None
        m = [Mount(f"/etc/{n}", str(self._tmp / "etc" / n), type="bind", read_only=True)
             for n in _local.INJECTED_ETC]
        if qemu is not None:
            m.append(Mount(QEMU_IN_ROOT, qemu, type="bind", read_only=True))
        return m

    def _common(self, cell_id: str, mode: str, limits: Limits) -> dict[str, Any]:
        """create() arguments both modes share: the local engine's limits and privileges, in docker's terms."""
        return dict(
            network_mode="none", read_only=True, hostname=_local.HOSTNAME, working_dir="/", user="0:0",
            labels={LABEL_RUN: self.run_id, LABEL_CELL: cell_id, LABEL_OWNER: self._owner, LABEL_MODE: mode},
            mem_limit=limits.memory, memswap_limit=limits.memory, pids_limit=limits.pids,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", f"seccomp={sandbox.docker_seccomp_profile()}"],
            # RLIMIT_CORE=0 as the local engine sets: no core files, the same qemu message every time
            ulimits=[Ulimit(name="core", soft=0, hard=0)],
            # the log holds the whole output up to the limit (xrun stops the cell past it)
            log_config=LogConfig(type="json-file", config={"max-size": str(limits.output + (1 << 20)),
                                                           "max-file": "1"}),
        )

    def _create(self, retries: _Retries, tag: str, cell: Cell, command: list[str], **kw: Any) -> Any:
        arch, variant = oci_platform(cell)
        plat = f"linux/{arch}" + (f"/{variant}" if variant else "")
        if self._closing.is_set() or _stopping():
            raise proc.Stopped("xrun is stopping")
        c = retries.call(self._client.containers.create, tag, command, platform=plat, **kw)
        if self._closing.is_set():       # __exit__ ran meanwhile: do not leave it behind
            with contextlib.suppress(Exception):
                c.remove(force=True)
            raise proc.Stopped("xrun is stopping")
        return c

    # one container per cell

    def _run_container(self, cell: Cell, tag: str, artifact: Path, rootfs: Path, qemu: str | None,
                       cmd: list[str], env: dict[str, str], run: RunSpec, retries: _Retries) -> _Outcome:
        mounts = self._mounts(qemu)
        mounts.append(Mount(APP_TARGET, str(artifact.resolve()), type="bind", read_only=True))
        # writable /tmp only where the image has one, as the local engine does; the rest is read-only
        tmpfs = {"/tmp": f"mode=1777,size={run.limits.memory}"} if (rootfs / "tmp").is_dir() else {}
        kw = self._common(cell.id, "cell", run.limits)
        c = self._create(retries, tag, cell, cmd, environment=env, mounts=mounts, tmpfs=tmpfs, init=True,
                         stdin_open=run.stdin is not None, **kw)
        sock = None
        try:
            if run.stdin is not None:
                sock = retries.call(c.attach_socket, params={"stdin": 1, "stream": 1})
            try:
                retries.call(c.start)
            except APIError as e:
                return _Outcome(infra=(f"docker could not start the container: {str(e.explanation or e)[:400]}",
                                       DAEMON_FIX if (e.status_code or 0) >= 500 and not any(
                                           s in str(e) for s in _OCI) else
                                       "check the image and the bind-mounted files (artifact, qemu)"))
            t0 = time.monotonic()
            if sock is not None:
                self._feed(sock, run.stdin)
            out, err = proc.Tail(run.limits.output), proc.Tail(run.limits.output)
            limited = threading.Event()

            def follow(tail: proc.Tail, **which: bool) -> None:
                # streamed while it runs, so the output limit stops the cell as it does in the local engine
                with contextlib.suppress(Exception):
                    for chunk in c.logs(stream=True, follow=True, **which):
                        tail.feed(chunk)
                        if out.total + err.total > run.limits.output and not limited.is_set():
                            limited.set()
                            with contextlib.suppress(Exception):
                                c.kill()
            readers = [threading.Thread(target=follow, args=(out,), kwargs={"stdout": True, "stderr": False},
                                        daemon=True),
                       threading.Thread(target=follow, args=(err,), kwargs={"stdout": False, "stderr": True},
                                        daemon=True)]
            for r in readers:
                r.start()
            code, timed_out = self._wait_container(c, t0 + run.timeout)
            dur = time.monotonic() - t0
            for r in readers:
                r.join(timeout=10)
            oom = False
            with contextlib.suppress(Exception):
                c.reload()
                oom = bool(c.attrs.get("State", {}).get("OOMKilled"))
            return _Outcome(code, out.text(), err.text(), dur, timed_out and not limited.is_set(),
                            oom_killed=oom, output_limited=limited.is_set())
        finally:
            if sock is not None:
                _close_sock(sock)
            with contextlib.suppress(Exception):
                c.remove(force=True)

    def _wait_container(self, c: Any, deadline: float) -> tuple[int | None, bool]:
        """The exit status; on the deadline (or Ctrl-C) kill the container, and so every process in it."""
        failures = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or _stopping() or self._closing.is_set():
                break
            t = time.monotonic()
            try:
                r = c.wait(timeout=min(WAIT_SLICE_S, left) + 0.05)
                return int(r.get("StatusCode", -1)), False
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
                # a read timeout is just the slice ending; a fast failure is the daemon going away
                if time.monotonic() - t < 0.04:
                    failures += 1
                    if failures >= _Retries.ATTEMPTS:
                        raise
                    time.sleep(0.2 * failures)
        with contextlib.suppress(NotFound, APIError):
            c.kill()
        if _stopping() or self._closing.is_set():
            raise proc.Stopped("xrun is stopping")
        try:
            r = c.wait(timeout=30)
            return int(r.get("StatusCode", -1)), True
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
            return None, True

    @staticmethod
    def _feed(sock: Any, data: str | None) -> None:
        """Write stdin on the attach/exec socket and half-close it, in the background."""
        raw = getattr(sock, "_sock", sock)

        def feed() -> None:
            with contextlib.suppress(OSError):
                raw.sendall((data or "").encode())
                raw.shutdown(socket.SHUT_WR)
        threading.Thread(target=feed, daemon=True).start()

    # pooled containers

    def _run_pooled(self, cell: Cell, tag: str, artifact: Path, rootfs: Path, qemu: str | None,
                    cmd: list[str], env: dict[str, str], run: RunSpec, retries: _Retries) -> _Outcome | None:
        key = (tag, qemu or "", (rootfs / "tmp").is_dir(), run.limits)
        for attempt in (1, 2):
            slot = self._acquire(key, cell, retries)
            if slot is None:
                return None         # the pool is unusable here; the caller runs a container
            keep = False
            try:
                _stage(artifact, slot.cell_dir)
                before = cgroup_counters(slot.init_pid) if slot.init_pid else None
                out = self._exec(slot, cmd, env, run, retries)
                after = cgroup_counters(slot.init_pid) if slot.init_pid else None
                if before is not None and after is not None:
                    out.oom_killed = after[0] > before[0]
                    out.pids_hit = after[1] > before[1]
                keep = self._reset(slot, retries)
                slot.cells += 1
                return out
            except _SlotGone as e:
                # the container died between cells; the cell never started, so a fresh one is fair
                if attempt == 2:
                    raise InfraError(f"pooled docker containers keep dying: {e}", DAEMON_FIX) from None
            finally:
                self._release(slot, keep)
        raise AssertionError("unreachable")  # pragma: no cover

    def _acquire(self, key: _SlotKey, cell: Cell, retries: _Retries) -> _Slot | None:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop()
        helper = helper_elf(platforms.host_goarch())
        if helper is None:
            self._pool_off = f"no pool init helper for a {platforms.host_goarch()} host"
            return None
        assert self._tmp is not None
        init = self._tmp / f"init-{platforms.host_goarch()}"
        with self._lock:
            if not init.exists():
                init.write_bytes(helper)
                init.chmod(0o755)
            n = len(self._slots)
        base = self._tmp / f"slot-{n}-{uuid.uuid4().hex[:6]}"
        cell_dir = base / "cell"
        cell_dir.mkdir(parents=True)
        mounts = self._mounts(key[1] or None)
        mounts += [Mount(CELL_DIR, str(cell_dir), type="bind", read_only=True),
                   Mount(INIT_IN_ROOT, str(init), type="bind", read_only=True)]
        limits = key[3]
        # bounded tmpfs, as in the local engine; a cell that writes there gets a fresh container next
        tmpfs = {"/tmp": f"mode=1777,size={limits.memory}"} if key[2] else {}
        kw = self._common(f"pool:{key[0]}", "pool", limits)
        c = self._create(retries, key[0], cell, [INIT_IN_ROOT], mounts=mounts, init=False, tmpfs=tmpfs,
                         shm_size=64 << 20, **kw)
        slot = _Slot(key, c, cell_dir, ("/tmp", "/dev/shm") if key[2] else ("/dev/shm",))
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

    def _release(self, slot: _Slot, keep: bool) -> None:
        if keep and not self._closing.is_set():
            with self._lock:
                self._idle.setdefault(slot.key, []).append(slot)
        else:
            self._discard(slot)

    def _discard(self, slot: _Slot) -> None:
        with contextlib.suppress(Exception):
            slot.container.remove(force=True)
        with self._lock:
            if slot in self._slots:
                self._slots.remove(slot)
        shutil.rmtree(slot.cell_dir.parent, ignore_errors=True)

    def _exec(self, slot: _Slot, cmd: list[str], env: dict[str, str], run: RunSpec,
              retries: _Retries) -> _Outcome:
        api = self._client.api
        if self._closing.is_set() or _stopping():
            raise proc.Stopped("xrun is stopping")
        try:
            ex = retries.call(api.exec_create, slot.container.id, cmd, stdin=run.stdin is not None,
                              environment=env, workdir="/", user="0:0")
        except APIError as e:
            if isinstance(e, NotFound) or e.status_code == 409:     # gone, or not running
                raise _SlotGone(str(e.explanation or e)) from None
            raise
        eid = ex["Id"]
        t0 = time.monotonic()
        sock = api.exec_start(eid, socket=True)
        out, err = proc.Tail(run.limits.output), proc.Tail(run.limits.output)
        eof = threading.Event()
        limited = threading.Event()

        def read() -> None:
            try:
                for stream, data in frames_iter(sock, False):
                    if limited.is_set():
                        continue            # drain: dockerd stalls other execs while a stream is unread
                    (out if stream == 1 else err).feed(data)
                    if out.total + err.total > run.limits.output:
                        limited.set()       # the main loop below kills the cell's processes
            except (OSError, ValueError):   # ValueError: the cell's end closed the socket under us
                pass
            finally:
                eof.set()
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if run.stdin is not None:
            self._feed(sock, run.stdin)
        deadline = t0 + run.timeout
        timed_out = False
        info: dict[str, Any] = {}
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or _stopping() or self._closing.is_set() or limited.is_set():
                    timed_out = not limited.is_set()
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
            if timed_out or limited.is_set():
                self._kill_all(slot, retries)
                if _stopping() or self._closing.is_set():
                    raise proc.Stopped("xrun is stopping")
            reader.join(timeout=5)
            for _ in range(500):        # the exit code lands a moment after the stream ends
                info = retries.call(api.exec_inspect, eid)
                if not info.get("Running"):
                    break
                time.sleep(0.002)
        finally:
            _close_sock(sock)
        code = info.get("ExitCode")
        text = out.text()
        if code in (126, 127) and any(s in text for s in _OCI):
            return _Outcome(infra=(f"docker exec failed: {text.strip()[:400]}",
                                   "check the image and the bind-mounted files (artifact, qemu)"))
        return _Outcome(int(code) if code is not None else None, text, err.text(), dur, timed_out,
                        output_limited=limited.is_set())

    def _kill_all(self, slot: _Slot, retries: _Retries) -> None:
        """SIGKILL every process in the container but its init (the helper's kill mode)."""
        api = self._client.api
        ex = retries.call(api.exec_create, slot.container.id, [INIT_IN_ROOT, "kill"], user="0:0")
        api.exec_start(ex["Id"], detach=True)
        for _ in range(1000):       # detached: wait for it here, never on a stream
            if not retries.call(api.exec_inspect, ex["Id"]).get("Running"):
                return
            time.sleep(0.005)

    def _leftovers(self, slot: _Slot) -> bool:
        """Whether processes outlived the cell: orphans are reparented to the container's init."""
        try:
            kids = Path(f"/proc/{slot.init_pid}/task/{slot.init_pid}/children").read_text()
            return bool(kids.strip())
        except OSError:
            pass
        top = slot.container.top(ps_args="-o pid")
        return len(top.get("Processes") or []) > 1

    def _reset(self, slot: _Slot, retries: _Retries) -> bool:
        """Make the slot as fresh as a new container; False when it cannot be (then it is replaced)."""
        try:
            if self._leftovers(slot):
                self._kill_all(slot, retries)
                if self._leftovers(slot):
                    return False
            # the tmpfs /tmp and /dev/shm start empty: anything left there means no reuse
            return self._writable_empty(slot, retries)
        except Exception:
            return False

    def _writable_empty(self, slot: _Slot, retries: _Retries) -> bool:
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


def _close_sock(sock: Any) -> None:
    for obj in (getattr(sock, "_sock", None), sock):
        if obj is not None:
            with contextlib.suppress(Exception):
                obj.close()


def _cache_dir() -> Path:
    return paths.cache_dir() / "docker"

