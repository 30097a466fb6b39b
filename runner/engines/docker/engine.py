"""DockerEngine: the engine's lifecycle, its images, run_cell, and container mode.

Container mode is one `docker run --init --read-only --network none` per cell: tini is PID 1, so
qemu never is (qemu as PID 1 ignores its own fatal signal and hangs after a target SIGILL), and a
child killed by signal N shows as exit 128+N, which maps back to the signal as bwrap's does. Pool
mode is pool.py; both share run_cell's checks and evidence, so they give the same verdicts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import filelock
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import LogConfig, Mount, Ulimit

from ... import forensics, paths, proc
from ...errors import InfraError
from ...model import Evidence, LimitOutcome
from ...plan import Cell, Limits, RunSpec
from .. import children, cores, emulator, sandbox
from ..foreign import run_foreign
from ..launch import HOSTNAME, INJECTED_ETC, plan_launch, split_status, tcg_missing_features, write_etc
from . import ownership
from .archive import Tree, scan, write_archive
from .common import (
    APP,
    APP_TARGET,
    DAEMON_FIX,
    DEFAULT_MODE,
    INSTALL_FIX,
    LAYOUT,
    MODE_ENV,
    MODES,
    OCI,
    QEMU_IN_ROOT,
    WAIT_SLICE_S,
    Outcome,
    Retries,
    close_sock,
    feed,
    oci_platform,
    stopping,
)
from .ownership import LABEL_CELL, LABEL_MODE, LABEL_OWNER, LABEL_RUN, list_containers, owner_label
from .pool import Pool

HARDENING = ("no capabilities (--cap-drop ALL), no new privileges", "xarch's seccomp filter (as the local "
             "engine's: mount, ptrace of others, keyrings, namespaces, modules, bpf, ... refused)",
             "read-only root filesystem, network none")

_TINI_EXEC = re.compile(r"^\[FATAL tini \(\d+\)\] exec (\S+) failed: (.+)$")
_RUNC_EXEC = re.compile(r"^exec (\S+): (.+)$")


def _exec_failure(err: str, out: str) -> tuple[str, str] | None:
    """(path, reason) when the runtime, not the program, printed that it could not exec a file."""
    if out.strip():
        return None
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    if len(lines) != 1:
        return None
    m = _TINI_EXEC.match(lines[0]) or _RUNC_EXEC.match(lines[0])
    return (m.group(1), m.group(2)) if m else None


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
        self._pool = Pool(self)
        self.removed_leftovers = 0

    # -- lifecycle --

    def __enter__(self) -> DockerEngine:
        proc.disable_core_dumps()
        self._tmp = paths.run_tmpdir("docker")
        write_etc(self._tmp)       # the same files the local engine binds
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
                mine = [c["Id"] for c in list_containers(self._client, f"{LABEL_RUN}={self.run_id}")]

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
        self._pool.clear()
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

    @property
    def scratch(self) -> Path:
        """This run's scratch directory (the pool's slots and init helper live there)."""
        assert self._tmp is not None, "use DockerEngine as a context manager"
        return self._tmp

    def closing(self) -> bool:
        """__exit__ has begun: nothing new may be created."""
        return self._closing.is_set()

    def _connect(self) -> None:
        if self._client is None:
            try:
                self._client = docker.from_env(max_pool_size=64)
            except DockerException as e:
                raise self._daemon_error(e) from None
        try:
            Retries().call(self._client.ping)
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

    def remove_leftovers(self) -> int:
        """Remove containers of earlier runs that crashed (owner dead, or foreign, exited and stale)."""
        return ownership.remove_leftovers(self._client, self.run_id)

    def preflight(self, cells: tuple[Cell, ...]) -> None:
        """Fail fast (exit 3) when the daemon is down or a needed qemu is missing."""
        if self._connect_error is not None:
            raise self._connect_error
        if self._client is None:
            self._connect()
        for arch in sorted({c.target.arch for c in cells if c.target.runnable and c.cpu}):
            emulator.qemu_binary(arch)

    # -- images --

    def image_for(self, cell: Cell, rootfs: Path, retries: Retries | None = None) -> str:
        """The tag of the imported image for this cell's image and platform, importing it once."""
        arch, variant = oci_platform(cell)
        name = cell.image_base      # a form (distroless-static:nonroot) shares its image
        key = (str(rootfs), arch, variant, name)
        with self._lock:
            tag = self._images.get(key)
            if tag is not None:
                return tag
        r = retries or Retries()
        own = self._daemon_image(rootfs, arch, variant, r)
        if own is not None:
            with self._lock:
                self._images[key] = own
            return own
        tree = scan(rootfs)
        h = hashlib.sha256(f"{LAYOUT}\0{name}\0{arch}\0{variant}\0{tree.digest}".encode())
        digest = h.hexdigest()
        repo = "xarch/" + re.sub(r"[^a-z0-9._-]", "-", name.lower())
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
                        self._import(tree, tag, arch, variant, name, digest, r)
        with self._lock:
            self._images[key] = tag
        return tag

    def _daemon_image(self, rootfs: Path, arch: str, variant: str | None, r: Retries) -> str | None:
        """The daemon's own image when the cell's image is one (`docker:REF`, or a `docker save` of an image
        the daemon has): its id, used as it is, when it is of the cell's platform. None otherwise."""
        try:
            digest = json.loads((rootfs.parent / "config.json").read_text()).get("digest")
        except (OSError, ValueError, AttributeError):
            return None
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            return None
        try:
            img = r.call(self._client.images.get, digest)
        except (ImageNotFound, APIError):
            return None
        a = img.attrs
        # the unpack already chose this image for the cell's platform; a variant-less image serves any variant
        if a.get("Id") != digest or a.get("Architecture") != arch or a.get("Variant") not in (None, "", variant):
            return None
        return str(digest)

    def _has_image(self, tag: str, r: Retries) -> bool:
        try:
            r.call(self._client.images.get, tag)
            return True
        except ImageNotFound:
            return False

    def _import(self, tree: Tree, tag: str, arch: str, variant: str | None, image: str, digest: str,
                r: Retries) -> None:
        assert self._tmp is not None
        dest = self._tmp / f"import-{digest[:12]}.tar"
        labels = {"xarch.image": image, "xarch.digest": digest,
                  "xarch.platform": f"linux/{arch}" + (f"/{variant}" if variant else "")}
        write_archive(tree, tag, arch, variant, labels, dest)
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
        launch = plan_launch(cell, artifact, rootfs, run)   # the local engine's checks, verbatim
        if isinstance(launch, Evidence):
            return launch
        mk = launch.evidence
        if self._connect_error is not None:
            return mk(ran=False, infra=self._connect_error.what, infra_fix=self._connect_error.fix)
        qemu = launch.emulator
        tcg = () if qemu is None else tcg_missing_features(cell.target.arch, cell.cpu)
        kids = children.plan(cell.target.arch, cell.cpu)      # the host's handlers, QEMU_CPU passed on
        env, notes, cmd, emu = {**dict(kids.env), **launch.env}, list(launch.notes), launch.command, launch.emu

        retries = Retries()
        extra: dict[str, str] = {}
        try:
            tag = self.image_for(cell, rootfs, retries)
            if tag.startswith("sha256:") and launch.app != APP_TARGET:
                # the daemon's own image, as it is: no /app link in it, so the artifact runs where it is mounted
                cmd = [APP_TARGET if a == launch.app else a for a in cmd]
            out = None
            if self.mode == "pool" and self._pool.off is None:
                out = self._pool.run(cell, tag, artifact, rootfs, qemu, cmd, env, run, retries,
                                     user=launch.image.user, workdir=launch.image.workdir)
            if out is not None:
                mode, how = "pool", f"docker exec in a pooled container of {tag} + {emu}"
            else:
                if self.mode == "pool":
                    extra["docker_pool_off"] = self._pool.off or "?"
                out = self._run_container(cell, tag, artifact, rootfs, qemu, cmd, env, run, retries,
                                          user=launch.image.user, workdir=launch.image.workdir)
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
        code, sig = split_status(code, sig)     # tini and docker exec report signal N as 128+N, like bwrap
        outcome = LimitOutcome(limits=run.limits, memory_by="docker --memory, no swap",
                               pids_by="docker --pids-limit", mechanism="docker",
                               oom_killed=out.oom_killed, pids_hit=out.pids_hit)
        ev = mk(ran=True, exit_code=code, signal=sig, stdout=out.stdout, stderr=out.stderr,
                duration_s=out.duration_s, timed_out=out.timed_out, emulator=qemu, tcg_missing=tcg,
                notes=tuple(notes), path=how, extra=self._extra(extra, retries), limits=outcome,
                output_limited=out.output_limited, hardening=HARDENING, children=kids.how)
        if forensics.wants_core(ev):
            ev = replace(ev, **self._guest_core(cell, tag, artifact, rootfs, qemu, cmd, env, run, sig or 0))
        return ev

    def _guest_core(self, cell: Cell, tag: str, artifact: Path, rootfs: Path, qemu: str | None,
                    cmd: list[str], env: dict[str, str], run: RunSpec, signal: int) -> dict[str, Any]:
        """The faulted cell once more, in a one-off container whose cwd is a bounded private core
        directory (engines/cores.py, as the local engine does): `core` (signal, pc) or `core_note`."""
        if (why := cores.why_not()) is not None:
            return {"core_note": why}
        assert self._tmp is not None
        d = cores.make_dir(self._tmp)
        if qemu is not None and not cores.has_cores(cell.target.arch):
            cmd = [cmd[0], *cores.log_args(), *cmd[1:]]
        try:
            self._run_container(cell, tag, artifact, rootfs, qemu, cmd, env, run, Retries(), core_dir=d)
        except (InfraError, DockerException, requests.exceptions.RequestException) as e:
            cores.take(d)
            return {"core_note": f"no guest core taken: the second run failed ({str(e)[:200]})"}
        got = cores.take(d, signal)
        return {"core": got} if got else {"core_note": "no guest core: the second run did not die of a fault signal"}

    @staticmethod
    def _extra(extra: dict[str, str], retries: Retries) -> dict[str, str]:
        if retries.count:
            extra["docker_retries"] = str(retries.count)
        return extra

    def mounts(self, qemu: str | None) -> list[Any]:
        assert self._tmp is not None
        m = [Mount(f"/etc/{n}", str(self._tmp / "etc" / n), type="bind", read_only=True)
             for n in INJECTED_ETC]
        if qemu is not None:
            m.append(Mount(QEMU_IN_ROOT, qemu, type="bind", read_only=True))
        return m

    def create_args(self, cell_id: str, mode: str, limits: Limits) -> dict[str, Any]:
        """create() arguments both modes share: the local engine's limits and privileges, in docker's terms."""
        return dict(
            network_mode="none", read_only=True, hostname=HOSTNAME, working_dir="/", user="0:0",
            labels={LABEL_RUN: self.run_id, LABEL_CELL: cell_id, LABEL_OWNER: self._owner, LABEL_MODE: mode},
            mem_limit=limits.memory, memswap_limit=limits.memory, pids_limit=limits.pids,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges", f"seccomp={sandbox.docker_seccomp_profile()}"],
            # RLIMIT_CORE=0 as the local engine sets: no core files, the same qemu message every time
            ulimits=[Ulimit(name="core", soft=0, hard=0)],
            # the log holds the whole output up to the limit (xrun stops the cell past it). Two files: a
            # program faster than the log reader (a native flood) rotates the log before the reader
            # attaches, and with one file it would find only what came after the rotation
            log_config=LogConfig(type="json-file", config={"max-size": str(limits.output + (1 << 20)),
                                                           "max-file": "2"}),
        )

    def create(self, retries: Retries, tag: str, cell: Cell, command: list[str], **kw: Any) -> Any:
        arch, variant = oci_platform(cell)
        plat = f"linux/{arch}" + (f"/{variant}" if variant else "")
        if self._closing.is_set() or stopping():
            raise proc.Stopped("xrun is stopping")
        c = retries.call(self._client.containers.create, tag, command, platform=plat, **kw)
        if self._closing.is_set():       # __exit__ ran meanwhile: do not leave it behind
            with contextlib.suppress(Exception):
                c.remove(force=True)
            raise proc.Stopped("xrun is stopping")
        return c

    # one container per cell

    def _run_container(self, cell: Cell, tag: str, artifact: Path, rootfs: Path, qemu: str | None,
                       cmd: list[str], env: dict[str, str], run: RunSpec, retries: Retries,
                       core_dir: Path | None = None, user: str = "0:0", workdir: str = "/") -> Outcome:
        mounts = self.mounts(qemu)
        mounts.append(Mount(APP_TARGET, str(artifact.resolve()), type="bind", read_only=True))
        # writable /tmp only where the image has one, as the local engine does; the rest is read-only
        tmpfs = {"/tmp": f"mode=1777,size={run.limits.memory}"} if (rootfs / "tmp").is_dir() else {}
        kw = {**self.create_args(cell.id, "cell", run.limits), "user": user, "working_dir": workdir}
        if core_dir is not None:        # the second run of a faulted cell (engines/cores.py)
            mounts.append(Mount(cores.CORE_DIR, str(core_dir), type="bind", read_only=False))
            kw["working_dir"] = cores.CORE_DIR
            kw["ulimits"] = [Ulimit(name="core", soft=cores.CORE_LIMIT, hard=cores.CORE_LIMIT),
                             Ulimit(name="fsize", soft=cores.CORE_LIMIT, hard=cores.CORE_LIMIT)]
        c = self.create(retries, tag, cell, cmd, environment=env, mounts=mounts, tmpfs=tmpfs, init=True,
                         stdin_open=run.stdin is not None, **kw)
        sock = None
        try:
            if run.stdin is not None:
                sock = retries.call(c.attach_socket, params={"stdin": 1, "stream": 1})
            try:
                retries.call(c.start)
            except APIError as e:
                return Outcome(infra=(f"docker could not start the container: {str(e.explanation or e)[:400]}",
                                       DAEMON_FIX if (e.status_code or 0) >= 500 and not any(
                                           s in str(e) for s in OCI) else
                                       "check the image and the bind-mounted files (artifact, qemu)"))
            t0 = time.monotonic()
            if sock is not None:
                feed(sock, run.stdin)
            output = proc.Output(run.limits.output)

            def follow(tail: proc.Tail, **which: bool) -> None:
                # streamed while it runs, so the output limit stops the cell as it does in the local engine
                with contextlib.suppress(Exception):
                    for chunk in c.logs(stream=True, follow=True, **which):
                        if output.feed(tail, chunk):
                            with contextlib.suppress(Exception):
                                c.kill()
            readers = [threading.Thread(target=follow, args=(output.out,), kwargs={"stdout": True, "stderr": False},
                                        daemon=True),
                       threading.Thread(target=follow, args=(output.err,), kwargs={"stdout": False, "stderr": True},
                                        daemon=True)]
            for r in readers:
                r.start()
            code, timed_out = self._wait_container(c, t0 + run.timeout)
            dur = time.monotonic() - t0
            for r in readers:
                r.join(timeout=10)
            # a new name: the readers, if one still runs, keep feeding theirs
            final = output if output.limited else _whole_log(c, output, run.limits.output)
            oom = False
            with contextlib.suppress(Exception):
                c.reload()
                oom = bool(c.attrs.get("State", {}).get("OOMKilled"))
            return Outcome(code, final.out.text(), final.err.text(), dur, timed_out and not final.limited,
                           oom_killed=oom, output_limited=final.limited)
        finally:
            if sock is not None:
                close_sock(sock)
            with contextlib.suppress(Exception):
                c.remove(force=True)

    def _wait_container(self, c: Any, deadline: float) -> tuple[int | None, bool]:
        """The exit status; on the deadline (or Ctrl-C) kill the container, and so every process in it."""
        failures = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or stopping() or self._closing.is_set():
                break
            t = time.monotonic()
            try:
                r = c.wait(timeout=min(WAIT_SLICE_S, left) + 0.05)
                return int(r.get("StatusCode", -1)), False
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
                # a read timeout is just the slice ending; a fast failure is the daemon going away
                if time.monotonic() - t < 0.04:
                    failures += 1
                    if failures >= Retries.ATTEMPTS:
                        raise
                    time.sleep(0.2 * failures)
        with contextlib.suppress(NotFound, APIError):
            c.kill()
        if stopping() or self._closing.is_set():
            raise proc.Stopped("xrun is stopping")
        try:
            r = c.wait(timeout=30)
            return int(r.get("StatusCode", -1)), True
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
            return None, True


def _whole_log(c: Any, seen: proc.Output, limit: int) -> proc.Output:
    """The exited container's log read whole, when it holds more than the streaming readers saw (a
    reader whose stream failed or lagged under load: a flood past the output limit then looked like
    `ok`); else what they saw."""
    whole = proc.Output(limit)
    try:
        whole.feed(whole.out, c.logs(stdout=True, stderr=False))
        whole.feed(whole.err, c.logs(stdout=False, stderr=True))
    except Exception:       # the daemon went away: keep what the readers had
        return seen
    return whole if whole.out.total + whole.err.total > seen.out.total + seen.err.total else seen


def _cache_dir() -> Path:
    return paths.cache_dir() / "docker"
