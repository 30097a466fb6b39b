"""`xrun exec`'s launch, cached: the sandbox command line of an image, CPU profile and kind of binary.

`go test -exec 'xrun exec'` starts xrun once per test binary, and a short test binary runs for a
fraction of a second: building the command line in Python (the image's config, the rootfs layout,
the emulator's verification, the private binfmt_misc plan, the seccomp program) each time would cost
more than the test. The first run of a kind does all that through the local engine (execwrap.py) and
writes the result here; every later run reads one JSON file, checks its stamps, adds what is its own
(the binary, its view of the host, its environment and arguments) and starts the sandbox. A passing
run imports only this module, execview, limits and proc.

Both the first run and the later ones start the cell through `launch()` below, and the local engine
builds every cell's tail with `cell_tail()`, so the cached command line is the engine's own.

A plan is keyed by everything that decides it: the image and profile as given, the binary's ELF
header (class, byte order, OS ABI, machine, flags) and PT_INTERP, the user and group running xrun,
the kernel's boot id (a new kernel may lose private binfmt_misc) and the cache root. Its stamps are
the stat of every host file it names (the image's root, the emulator, with the same key as
engines/emulator.py's verification so a modified qemu is verified again, the tagged copies, bwrap)
and of xarch's own engine code (an upgrade or an edit makes new plans).

The compiled launcher (engines/launcher/, `xrun exec --launcher`) reads the same plans: it computes
the same key, checks the same stamps and runs the same command line, so a passing run starts no
Python at all. A stale or missing
plan simply means the slow path runs again and rewrites it; plans are written by atomic rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import paths

FORMAT = 2                  # the compiled launcher reads plans too: its planFormat (launcher/main.go) is this
SECCOMP = "{seccomp}"       # stands in head for the seccomp fd's number, which is the run's own


def tmpfs_args(path: str, max_bytes: int, mode: str = "1777") -> list[str]:
    """A private writable tmpfs, bounded (its pages also count towards the cell's memory cgroup)."""
    return ["--perms", mode, "--size", str(max_bytes), "--tmpfs", path]


def env_args(env: Mapping[str, str]) -> list[str]:
    """Only these variables: never the host's."""
    out = ["--clearenv"]
    for k, v in env.items():
        out += ["--setenv", k, v]
    return out


def launch_env(image_env: Mapping[str, str], run_env: Mapping[str, str], cell_env: Mapping[str, str],
               arch_env: Mapping[str, str], arch_env_why: str, default_path: str) -> tuple[dict[str, str], list[str]]:
    """A cell's environment and the notes it makes: the image's Env, the matrix's (or the caller's) over
    it, the cell's, then what the arch needs appended (emulated cells only: `arch_env` is empty
    otherwise), then PATH and HOME when nothing set them."""
    env = dict(image_env)
    env.update(run_env)
    env.update(cell_env)
    notes = []
    for k, val in arch_env.items():
        env[k] = f"{env[k]},{val}" if env.get(k) else val
        notes.append(f"{k}={val} set: {arch_env_why}")
    env.setdefault("PATH", default_path)
    env.setdefault("HOME", "/")
    return env, notes


def cell_tail(artifact: str, app: str, tmp_size: int | None, binds: Sequence[tuple[str, str, bool]], cwd: str,
              env: Mapping[str, str], command: Sequence[str]) -> list[str]:
    """The end of every local cell's bwrap command line, after the root and the emulator: the artifact,
    a private /tmp (`tmp_size`: `xrun exec`), the host paths bound (source, path in the cell, writable),
    the read-only root, the working directory, the environment and the command."""
    argv = ["--ro-bind", artifact, app]
    if tmp_size is not None:
        argv += tmpfs_args("/tmp", tmp_size)
    for src, dst, rw in binds:
        argv += ["--bind" if rw else "--ro-bind", src, dst]
    # the root itself is a tmpfs bwrap made: read-only, as docker's --read-only root (only /tmp writes)
    return [*argv, "--remount-ro", "/", "--chdir", cwd, *env_args(env), "--", *command]


def state_dir(cache: Path) -> Path:
    """The files cached launches name: /etc/{hosts,resolv.conf,hostname} and the binfmt_misc mount point."""
    return cache / "exec" / f"state-{FORMAT}"


def header_kind(path: str) -> str | None:
    """What of an executable's header a launch depends on (e_ident, e_machine, e_flags, PT_INTERP), or
    None when it is not an ELF this module can read (execwrap.py then says what it is)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
                return None
            e = "<" if head[5] == 1 else ">"
            if head[4] == 1:
                machine, phoff, flags, phentsize, phnum = (struct.unpack_from(e + "H", head, 18)[0],
                                                           *struct.unpack_from(e + "I", head, 28),
                                                           *struct.unpack_from(e + "I", head, 36),
                                                           *struct.unpack_from(e + "HH", head, 42))
            else:
                machine = struct.unpack_from(e + "H", head, 18)[0]
                phoff, = struct.unpack_from(e + "Q", head, 32)
                flags, = struct.unpack_from(e + "I", head, 48)
                phentsize, phnum = struct.unpack_from(e + "HH", head, 54)
            interp = ""
            if phnum and phentsize and phnum < 256:
                f.seek(phoff)
                table = f.read(phentsize * phnum)
                for i in range(len(table) // phentsize):
                    ent = table[i * phentsize:(i + 1) * phentsize]
                    if struct.unpack_from(e + "I", ent, 0)[0] != 3:        # PT_INTERP
                        continue
                    off, size = (struct.unpack_from(e + "II", ent, 4) if head[4] == 1
                                 else (struct.unpack_from(e + "Q", ent, 8)[0], struct.unpack_from(e + "Q", ent, 32)[0]))
                    f.seek(off)
                    interp = f.read(min(size, 4096)).split(b"\0")[0].decode(errors="replace")
                    break
    except OSError:
        return None
    return f"{head[:16].hex()}:{machine}:{flags:x}:{interp}"


def code_files() -> list[str]:
    """The code a plan comes from (xarch's engines and its exec modules): stamped in every plan."""
    here = os.path.dirname(os.path.abspath(__file__))
    top = os.path.dirname(here)
    files = sorted(e.path for e in os.scandir(here) if e.name.endswith(".py"))
    return files + [os.path.join(top, n) for n in ("__init__.py", "execwrap.py", "execview.py")]


def plan_key(cache: Path, image: str, profile: str, kind: str) -> tuple[Path, str]:
    """Where the plan of this launch is, and its whole key (kept in the plan: a file name is only a
    64-bit digest of it, and zlib's crc32 loads faster than hashlib's OpenSSL). The launcher
    (launcher/plan.go) computes the same: keep the two in step."""
    key = "\0".join([str(FORMAT), image, profile, kind, str(os.getuid()), str(os.getgid()), paths.boot_id(),
                     str(cache)])
    raw = key.encode()
    return cache / "exec" / f"{zlib.crc32(raw):08x}{zlib.crc32(raw[::-1]):08x}.json", key


def save(where: tuple[Path, str], plan: Mapping[str, Any], stamped: Sequence[str]) -> None:
    """Write a plan (atomically: concurrent test binaries may write the same one)."""
    path, key = where
    data = {**plan, "key": key, "stamps": [paths.stat_key(p) for p in dict.fromkeys([*stamped, *code_files()])]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def load(where: tuple[Path, str]) -> dict[str, Any] | None:
    """The plan, if it is there, is this key's and every file it names is as it was."""
    path, key = where
    try:
        plan: dict[str, Any] = json.loads(path.read_text())     # written by save() alone
    except (OSError, ValueError):
        return None
    if plan.get("key") != key or any(paths.stat_key(s[0]) != s for s in plan.get("stamps", ())):
        return None
    return plan


def argv_of(plan: Mapping[str, Any], artifact: str, args: Sequence[str], cwd: str,
            binds: Sequence[tuple[str, str, bool]], run_env: Mapping[str, str], seccomp_fd: int | None) -> list[str]:
    """The whole sandbox command line of one run through a plan: what LocalEngine.prepare gives."""
    env, _notes = launch_env(plan["image_env"], run_env, {}, plan["arch_env"], plan["arch_env_why"],
                             plan["default_path"])
    head = [str(seccomp_fd) if a == SECCOMP else a for a in plan["head"]]
    return head + cell_tail(artifact, plan["app"], plan["tmp_size"], binds, cwd, {**plan["kids_env"], **env},
                            [*plan["command"], *args])


class Limits:
    """The numbers of a plan's limits (what engines/limits.py reads of plan.Limits)."""

    def __init__(self, memory: int, pids: int, output: int) -> None:
        self.memory, self.pids, self.output = memory, pids, output


def launch(plan: Mapping[str, Any], artifact: str, args: Sequence[str], cwd: str,
           binds: Sequence[tuple[str, str, bool]], run_env: Mapping[str, str], timeout: float | None,
           on_exit: Callable[[int, bytearray | None, bytearray | None, Callable[[], object]], int]) -> int:
    """Run a binary through a plan with stdio passed through; the exit status (128+N for signal N).

    `on_exit(rc, stderr_tail, stdout_tail, outcome)` is called for a run that did not exit 0 (stderr
    and stdout tails when they were not terminals; `outcome()` reads the limits that struck) and gives
    the status to return: execwrap.py explains the exit there."""
    from .. import proc
    from . import limits

    proc.disable_core_dumps()
    fds: tuple[int, ...] = ()
    if plan.get("seccomp"):
        fd = os.memfd_create("xarch-seccomp")     # close-on-exec; handed to bwrap alone via pass_fds
        os.write(fd, bytes.fromhex(plan["seccomp"]))
        os.lseek(fd, 0, os.SEEK_SET)
        fds = (fd,)
    argv = argv_of(plan, artifact, args, cwd, binds, run_env, fds[0] if fds else None)
    # stdio is inherited: the test binary's output streams through as it happens. stderr, unless it is
    # a terminal, also goes through a pipe whose tail says why a run failed (Go's CPU check, qemu)
    tail = None if sys.stderr.isatty() else bytearray()
    out_tail = None if sys.stdout.isatty() else bytearray()
    try:
        with limits.cell_limits(Limits(*plan["limits"])) as lim:
            try:
                rc, timed_out = proc.run_attached(argv, timeout=timeout, preexec_fn=lim.preexec, pass_fds=fds,
                                                  stderr_tail=tail, stdout_tail=out_tail)
            except KeyboardInterrupt:
                return 130
            if timed_out:
                sys.stderr.write(f"xrun exec: timeout after {timeout:g}s in {plan['cell']}; killed\n")
                return 124
            if rc == 0:
                return 0
            return on_exit(rc, tail, out_tail, lim.outcome)
    finally:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        limits.close()      # this process's cgroups (the engine's exit does it for matrix runs)
