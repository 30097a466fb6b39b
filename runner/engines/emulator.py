"""The host executables a cell's sandbox is built around, checked before xrun runs them on the host.

xrun bind-mounts qemu-<arch>-static into every cell and also runs it on the host (the TCG probe,
`xrun doctor`). A cell can no longer write it (see sandbox.py), but a file that *was* modified, by an
earlier xrun version's cell, another tool or a user, must not be executed as root. So before use an
emulator must be owned by root or by the user running xrun, writable by nobody else, and, when dpkg
installed it, have the md5 dpkg recorded for it (the only digest dpkg keeps). Results are cached by
the file's inode, size and mtime, so a change is noticed on the next use.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from pathlib import Path

from .. import install, paths, platforms, proc
from ..errors import InfraError

QEMU_FIX = (f"install the qemu-user emulators: `{install.QEMU}` (Debian/Ubuntu); "
            "xrun runs qemu-<arch>-static itself and does not need binfmt_misc")
REINSTALL_FIX = "reinstall it: `sudo apt-get install --reinstall {pkg}`"
DPKG_INFO = Path("/var/lib/dpkg/info")


@functools.lru_cache(maxsize=1)
def _dpkg_md5s() -> dict[str, tuple[str, str]]:
    """'/usr/bin/qemu-aarch64-static' -> (md5, package) for the files of the qemu packages dpkg installed."""
    out: dict[str, tuple[str, str]] = {}
    for f in sorted(DPKG_INFO.glob("qemu*.md5sums")) if DPKG_INFO.is_dir() else ():
        pkg = f.name.removesuffix(".md5sums").split(":")[0]
        try:
            for line in f.read_text(errors="replace").splitlines():
                digest, _, rel = line.partition("  ")
                if rel:
                    out["/" + rel.strip()] = (digest.strip(), pkg)
        except OSError:
            continue
    return out


@functools.lru_cache(maxsize=64)
def _verified(path: str, ino: int, size: int, mtime_ns: int, ctime_ns: int, mode: int, uid: int) -> str | None:
    """Why this exact file must not run (None: it may)."""
    if uid not in (0, os.getuid()):
        return f"it is owned by uid {uid}, neither root nor the user running xrun"
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by {'others' if mode & stat.S_IWOTH else 'its group'} (mode {stat.S_IMODE(mode):o})"
    recorded = _dpkg_md5s().get(path)
    if recorded is None:
        return None
    # ctime too: no write (nor a utime that restores the mtime) leaves it unchanged
    key = f"{path}|{ino}|{size}|{mtime_ns}|{ctime_ns}|{recorded[0]}"
    good = _known_good()
    if key in good:
        return None
    with open(path, "rb") as f:
        h = hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False))
    if h.hexdigest() != recorded[0]:
        return (f"its content differs from what dpkg installed for {recorded[1]} (md5 {h.hexdigest()}, "
                f"dpkg recorded {recorded[0]}): it was modified after installation")
    _remember_good(good, key, path)
    return None


_GOOD = "verified-executables.json"


def _known_good() -> list[str]:
    """The files an earlier xrun already hashed (`xrun exec` runs once per test binary: hashing qemu each
    time cost tens of milliseconds), as `path|inode|size|mtime|ctime|md5` keys."""
    import json

    try:
        good = json.loads((paths.cache_dir() / _GOOD).read_text())
    except (OSError, ValueError):
        return []
    return [k for k in good if isinstance(k, str)] if isinstance(good, list) else []


def _remember_good(good: list[str], key: str, path: str) -> None:
    import json

    keep = [k for k in good if not k.startswith(f"{path}|")][-63:]
    try:
        f = paths.cache_dir() / _GOOD
        f.parent.mkdir(parents=True, exist_ok=True)
        paths.write_text_atomic(f, json.dumps([*keep, key]))
    except OSError:
        pass        # a read-only cache costs a hash per run, nothing else


def verify(path: str) -> str:
    """The real path of a host executable xrun may run and bind into cells; InfraError when it may not."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as e:
        raise InfraError(f"{path} cannot be read: {e}", QEMU_FIX) from None
    why = _verified(real, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid)
    if why is not None:
        pkg = _dpkg_md5s().get(real, ("", "qemu-user-static"))[1]
        raise InfraError(f"xrun will not run {real}: {why}", REINSTALL_FIX.format(pkg=pkg))
    return real


def qemu_binary(goarch: str) -> str:
    """The verified absolute path of qemu-<arch>-static for a GOARCH (InfraError when missing or modified)."""
    q = platforms.arch(goarch).qemu
    if q is None:
        raise InfraError(f"no qemu-user emulator exists for {goarch}", "pick a Linux target")
    return verify(proc.which(f"qemu-{q}-static", QEMU_FIX))
