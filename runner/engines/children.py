"""Processes a cell starts: they run under the cell's emulator and CPU model, or xrun says why not.

qemu-user emulates one process. When it execs another program, the kernel runs that program itself,
and a foreign ELF then runs only through a binfmt_misc handler. The host's handlers (Debian's
qemu-user-static with binfmt-support, or setup-qemu on GitHub) start qemu with its default CPU, and
a child of the host's own arch never reaches qemu at all: it runs on the host CPU, which is a false
green for a CPU profile.

The local engine therefore gives every cell a private binfmt_misc (Linux >= 6.7 lets a user
namespace mount its own instance). In an outer user and mount namespace, made with `unshare`, it
mounts that instance and registers handlers for the cell's arch (and i386 for amd64 cells). The
interpreter is qemu-<arch>-static, opened at registration (flag F), so the image never needs qemu
inside it. The cell's `QEMU_CPU` then gives every child the cell's model. bwrap runs inside that
namespace, and the namespaces it creates are nested in it, so the handlers reach every process
of the cell and nothing outside it.

A handler for the host's own arch would also catch bwrap and qemu themselves. Those are copies
whose EI_OSABI byte is set to 0xfe (the kernel's ELF loader ignores it). The handlers match only
OSABI 0 (SYSV) and 3 (GNU/Linux), so the copies run natively.

Without a private instance (an older kernel), children go through the host's handlers when they are
registered with flag F, with `QEMU_CPU` passed on; children of the host's own arch then run natively,
which the evidence says. Without either, a foreign child fails with "exec format error", and the
verdict names the child, the missing handler and the command that installs one.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from elftools.elf.enums import ENUM_E_MACHINE

from .. import install, paths, platforms
from ..errors import InfraError
from .emulator import qemu_binary

__all__ = ["Children", "host_handlers", "plan", "private_off", "private_supported"]

OSABI_TAG = 0xFE
_ABIS = (0x00, 0x03)            # ELFOSABI_SYSV, ELFOSABI_GNU: what Linux binaries carry
_BINFMT = "/proc/sys/fs/binfmt_misc"
# $1: the mount point; $2: how many handler lines follow; then the lines; then the command
_SCRIPT = ('set -e; d=$1; n=$2; shift 2; mount -t binfmt_misc binfmt_misc "$d"; '
           'while [ "$n" -gt 0 ]; do printf "%s" "$1" > "$d/register"; shift; n=$((n-1)); done; exec "$@"')
_lock = threading.Lock()


@dataclass(frozen=True)
class Children:
    """How a cell's children run: the argv prefix that sets it up, the env it needs, and the evidence text."""

    prefix: tuple[str, ...]         # put before the sandbox argv (empty: nothing to set up)
    env: tuple[tuple[str, str], ...]
    how: str                        # evidence.children
    bwrap: str | None = None        # the bwrap to run (a tagged copy when a host-arch handler is in place)
    qemu: str | None = None         # the qemu to bind into the root (tagged likewise)
    binfmt: str = "none"            # private | host | none


def _magic(goarch: str, abi: int | None) -> tuple[bytes, bytes]:
    """The first 20 bytes of an executable ELF of that arch, and the mask binfmt_misc compares with."""
    a = platforms.arch(goarch)
    machine = int(ENUM_E_MACHINE[a.elf_machine])
    little = a.endian == "little"
    order: Literal["little", "big"] = "little" if little else "big"
    magic = (b"\x7fELF" + bytes([1 if a.elf_class == 32 else 2, 1 if little else 2, 1, abi or 0]) + bytes(8)
             + (2).to_bytes(2, order) + machine.to_bytes(2, order))
    etype_mask = b"\xfe\xff" if little else b"\xff\xfe"     # ET_EXEC or ET_DYN
    mask = b"\xff" * 7 + (b"\xff" if abi is not None else b"\x00") + b"\xff" * 8 + etype_mask + b"\xff\xff"
    return magic, mask


def _esc(b: bytes) -> str:
    return "".join(f"\\x{c:02x}" for c in b)


def _tagged(path: str) -> str:
    """A copy of an executable with EI_OSABI = 0xfe, cached by content; no handler matches it."""
    st = os.stat(path)
    key = hashlib.sha256(f"{os.path.realpath(path)}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = paths.cache_dir() / "tagged" / f"{os.path.basename(path)}-{key}"
    if out.is_file():
        return str(out)
    with _lock:
        out.parent.mkdir(parents=True, exist_ok=True)
        data = bytearray(Path(path).read_bytes())
        data[7] = OSABI_TAG
        tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_bytes(bytes(data))
        tmp.chmod(0o755)
        os.replace(tmp, out)
    return str(out)


@functools.lru_cache(maxsize=1)
def private_supported() -> str | None:
    """None when this kernel lets xrun mount a private binfmt_misc in a user namespace, else why not."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return f"`unshare` is missing ({install.UTIL_LINUX})"
    return paths.remembered("private-binfmt", [unshare, "/bin/sh"], os.uname().release,
                            lambda: _probe_private(unshare))


def _probe_private(unshare: str) -> str | None:
    d = paths.cache_dir() / "binfmt-probe"
    d.mkdir(parents=True, exist_ok=True)
    try:
        r = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "/bin/sh", "-c", _SCRIPT, "sh",
                            str(d), "0", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"the probe could not run ({e})"
    if r.returncode != 0:
        return (f"this kernel ({os.uname().release}) gives a user namespace no binfmt_misc of its own "
                f"(Linux >= 6.7 does): '{r.stderr.strip()[-160:]}'")
    return None


def host_handlers() -> dict[str, str]:
    """The host's binfmt_misc handlers: name -> 'enabled|disabled, flags F, interpreter X'."""
    out: dict[str, str] = {}
    try:
        names = sorted(os.listdir(_BINFMT))
    except OSError:
        return out
    for n in names:
        if n in ("register", "status"):
            continue
        try:
            text = Path(_BINFMT, n).read_text()
        except OSError:
            continue
        out[n] = text
    return out


def _host_handler_for(goarch: str) -> tuple[str, str] | None:
    """(name, flags) of an enabled host handler that matches this arch's executables, if any."""
    magic, mask = _magic(goarch, None)
    for name, text in host_handlers().items():
        fields = {k.rstrip(":"): v for k, v in (ln.split(" ", 1) for ln in text.splitlines() if " " in ln)}
        if not text.startswith("enabled") or "magic" not in fields:
            continue
        try:
            hm = bytes.fromhex(fields["magic"].strip())
            hk = bytes.fromhex(fields.get("mask", "ff" * len(hm)).strip())
        except ValueError:
            continue
        n = min(len(hm), len(magic))
        if all((magic[i] & hk[i] & mask[i]) == (hm[i] & hk[i] & mask[i]) for i in range(n)):
            return name, fields.get("flags", "").strip()
    return None


def _arches_for(goarch: str) -> tuple[str, ...]:
    """The arches a cell's children may be: its own, and i386 on amd64 (a real amd64 machine runs both)."""
    return (goarch, "386") if goarch == "amd64" else (goarch,)


def private_off() -> str | None:
    """Why private handlers are off: XARCH_CHILDREN=host asks for the host's handlers only."""
    if os.environ.get("XARCH_CHILDREN", "") == "host":
        return "XARCH_CHILDREN=host: private handlers are off"
    return private_supported()


def plan(goarch: str, model: str, mount_point: Path | None = None, bwrap: str | None = None) -> Children:
    """How children of a cell of this arch and qemu model (`model` "" = the native profile) will run.

    Private handlers need `mount_point` (a directory of the run's) and the sandbox's `bwrap`; the
    docker engine passes neither: its containers are not started by xrun's process.
    """
    a = platforms.arch(goarch)
    cpu = a.cpu_arg(model) if model else ""
    env = (("QEMU_CPU", cpu),) if cpu else ()
    native = not model
    why = private_off() if mount_point is not None and bwrap is not None else \
        "the docker engine's containers get no private binfmt_misc (their processes are not xrun's)"
    if why is None and mount_point is not None and bwrap is not None:
        lines = []
        for arch in _arches_for(goarch):
            if native and arch in (platforms.host_goarch(), "386"):
                continue    # the native profile runs the host's own arch on the host CPU, children too
            try:
                q = _tagged(qemu_binary(arch))
            except InfraError:      # no qemu for that arch: its children fail as on a real machine
                continue
            for abi in _ABIS:
                magic, mask = _magic(arch, abi)
                lines.append(f":xa-{arch}-{abi}:M::{_esc(magic)}:{_esc(mask)}:{q}:POF")
        qemu = _tagged(qemu_binary(goarch)) if not native else None
        models = f" with QEMU_CPU={cpu}" if cpu else " on the host CPU (native profile)"
        return Children((shutil.which("unshare") or "unshare", "--user", "--map-root-user", "--mount", "/bin/sh", "-c", _SCRIPT, "sh",
                         str(mount_point), str(len(lines)), *lines), env,
                        f"private binfmt_misc: children of {', '.join(_arches_for(goarch))} run under "
                        f"qemu{models}", _tagged(bwrap), qemu, "private")
    host = _host_handler_for(goarch) if goarch != platforms.host_goarch() else None
    if host is not None and "F" in host[1]:
        return Children((), env, f"host binfmt_misc handler {host[0]} (flags {host[1]}): children run under it"
                        + (f" with QEMU_CPU={cpu}" if cpu else "")
                        + (f"; no private handlers: {why}" if why else ""), binfmt="host")
    if host is not None:
        return Children((), env, f"host binfmt_misc handler {host[0]} lacks flag F (flags '{host[1]}'): it "
                        f"cannot start qemu inside the image, so a foreign child fails; {why}")
    same = goarch == platforms.host_goarch() or (goarch == "386" and platforms.host_goarch() == "amd64")
    if same:
        return Children((), env, f"children of {goarch} run natively on the host CPU: the CPU profile does "
                        f"not apply to them ({why})")
    return Children((), env, f"no binfmt_misc handler for {goarch}: a child of that arch fails with "
                    f"'exec format error' ({why})")
