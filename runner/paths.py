"""Where xarch keeps things: one cache root (one override), and the temp dirs a killed run leaves.

Every cache (build stamps, images, docker locks, the zig cache, probes of the emulators) lives under
`cache_dir()`, so `XARCH_CACHE_DIR` moves all of them together, and a relative XDG_CACHE_HOME is
ignored as the XDG spec says it must be.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
CACHE_ENV = "XARCH_CACHE_DIR"


def cache_dir() -> Path:
    """xarch's cache root: $XARCH_CACHE_DIR, else $XDG_CACHE_HOME/xarch (absolute only), else ~/.cache/xarch."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "xarch"


def images_dir() -> Path:
    """The image definitions (images/*.yaml): package data when installed, else the checkout's images/."""
    installed = Path(__file__).resolve().parent / "image_definitions"
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parent.parent / "images"


def run_tmpdir(kind: str) -> Path:
    """A private scratch dir for this process, named so the next run can tell a dead owner's apart."""
    return Path(tempfile.mkdtemp(prefix=f"xarch-{kind}-{os.getpid()}-"))


def remove_stale_tmpdirs() -> int:
    """Remove scratch dirs (`run_tmpdir`) of earlier runs whose process is gone (`kill -9` leaves them)."""
    n = 0
    for d in Path(tempfile.gettempdir()).glob("xarch-*-*-*"):
        parts = d.name.split("-")
        if len(parts) != 4 or not parts[2].isdigit() or not d.is_dir() or d.is_symlink():
            continue
        pid = int(parts[2])
        if pid == os.getpid() or Path(f"/proc/{pid}").exists():
            continue
        with contextlib.suppress(OSError):
            _make_removable(d)
        shutil.rmtree(d, ignore_errors=True)
        n += 1
    return n


def _make_removable(root: Path) -> None:
    """Read-only directories (unpacked packages, a cell's chmod) would stop rmtree as a non-root user."""
    for dirpath, dirnames, _files in os.walk(root):
        for d in dirnames:
            p = os.path.join(dirpath, d)
            if not os.path.islink(p):
                with contextlib.suppress(OSError):
                    os.chmod(p, 0o700)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write via a sibling temp file and rename, so a reader (a CI upload, a browser) never sees half a
    file. Not mkstemp: its 0600 mode would make a published report unreadable to a web server."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        # errors="replace": a report loaded from JSON may hold lone surrogates from undecodable output
        with open(tmp, "x", encoding="utf-8", errors="replace") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def stat_key(path: str) -> list[object]:
    """[path, inode, size, mtime, ctime, mode, owner] of a file, or [path, None]: a cache entry made
    from it holds while this is unchanged (no write, nor a utime restoring the mtime, keeps ctime)."""
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode, st.st_uid]


def boot_id() -> str:
    """This boot of the kernel (a new kernel may behave otherwise: probes are made again)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def remembered(kind: str, files: Sequence[str], extra: str, compute: Callable[[], T],
               keep: Callable[[T], bool] | None = None) -> T:
    """What `compute` gives for these host files (a probe of an emulator, the Go toolchain's version),
    remembered across runs under cache_dir()/probes while every file keeps its inode, size, mtime and
    ctime and the kernel keeps its boot id; anything else computes it again. `compute` returns JSON;
    `keep` says which answers to remember (a timeout, say, is not)."""
    import json
    import zlib

    key = json.dumps([kind, extra, [stat_key(f) for f in files], boot_id()])
    # named by what is asked, not by the stats: a rebuilt binary or an upgraded qemu overwrites its
    # old answer instead of leaving it behind
    slot = json.dumps([kind, extra, list(files)])
    where = cache_dir() / "probes" / f"{kind}-{zlib.crc32(slot.encode()):08x}.json"
    try:
        got = json.loads(where.read_text())
        if got.get("key") == key:
            return got["value"]  # type: ignore[no-any-return]
    except (OSError, ValueError, AttributeError):
        pass
    value = compute()
    if keep is not None and not keep(value):
        return value
    with contextlib.suppress(OSError):
        where.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(where, json.dumps({"key": key, "value": value}))
    return value
