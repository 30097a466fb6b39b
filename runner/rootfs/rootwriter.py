"""Writing image entries into a root filesystem safely (rootfs/external.py's layers and bare roots).

Nothing may land outside the root: no absolute names, no '..', no write through a symlink, no hard
link to outside, no relative symlink climbing above the root. Ownership is recorded (`owners`), never
applied; setuid/setgid bits are dropped.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ..errors import BuildError, ConfigError
from ._fs import _rmtree

_OPAQUE = ".wh..wh..opq"
_CHUNK = 1 << 20
_SETID = stat.S_ISUID | stat.S_ISGID


class ImageSourceError(ConfigError):
    """An image source cannot be used: unknown kind, missing or corrupt file, a platform it lacks, or a
    hostile entry (exit 2). Names the archive file and, for an entry, the entry and why."""


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _split(name: str) -> list[str] | None:
    """The components of an archive name, or None if it is absolute or has a '..' (a leading "./" is fine)."""
    if name.startswith("/"):
        return None
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return None if ".." in parts else parts


class RootWriter:
    """Writes archive entries into a root filesystem, refusing any that would land outside it.

    No parent of an entry may be a symlink (so nothing is written through one), hard links go only to
    entries already in the root, and whiteouts hide what lower layers wrote, never this layer's own
    entries. Directory modes and mtimes are applied at the end: a read-only directory would stop its
    own entries being written, and writing them changes its mtime.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.label = ""
        self._dirs: dict[str, tuple[int, float]] = {}
        self._this_layer: set[str] = set()
        self.owners: dict[str, tuple[int, int]] = {}    # entries not owned by 0:0 (rootfs/owners.py)

    def own(self, parts: list[str], uid: int, gid: int) -> None:
        """Record an entry's owner, as the last layer that wrote it says."""
        rel = "/".join(parts)
        if (uid, gid) == (0, 0):
            self.owners.pop(rel, None)
        else:
            self.owners[rel] = (uid, gid)

    def layer(self, label: str) -> None:
        self.label = label
        self._this_layer = set()

    def error(self, entry: str, why: str) -> ImageSourceError:
        return ImageSourceError(why, file=self.label, key=entry)

    @contextlib.contextmanager
    def entry(self, name: str) -> Iterator[None]:
        """Our own write failing (a full disk) is an infrastructure error, not the image's fault."""
        try:
            yield
        except gzip.BadGzipFile:
            raise
        except OSError as e:
            raise BuildError(f"unpacking {self.label}: entry {name!r}: {e}") from e

    def _parent(self, parts: list[str], entry: str, *, create: bool) -> Path | None:
        """The directory that holds parts[-1] (made if `create`), refusing a path through a symlink."""
        cur = self.root
        for i, p in enumerate(parts[:-1]):
            cur = cur / p
            try:
                mode = os.lstat(cur).st_mode
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(cur, 0o755)
                continue
            where = "/".join(parts[: i + 1])
            if stat.S_ISLNK(mode):
                raise self.error(entry, f"goes through the symlink {where!r}; nothing may be written "
                                        "through a symlink")
            if not stat.S_ISDIR(mode):
                raise self.error(entry, f"{where!r} is not a directory")
        return cur

    def _mark(self, parts: list[str]) -> None:
        for i in range(1, len(parts) + 1):
            self._this_layer.add("/".join(parts[:i]))

    def _fresh(self, parts: list[str], entry: str, *, keep_dir: bool = False) -> Path:
        """Where the entry goes, with what a lower layer had there removed (but a directory if `keep_dir`)."""
        parent = self._parent(parts, entry, create=True)
        assert parent is not None
        path = parent / parts[-1]
        if not (keep_dir and path.is_dir() and not path.is_symlink()):
            _rmtree(path)
        return path

    def directory(self, entry: str, parts: list[str], mode: int, mtime: float) -> None:
        path = self._fresh(parts, entry, keep_dir=True)
        if not path.is_dir():
            os.mkdir(path, 0o755)
        self._dirs["/".join(parts)] = (stat.S_IMODE(mode) & ~_SETID, mtime)
        self._mark(parts)

    def file(self, entry: str, parts: list[str], mode: int, mtime: float, data: Readable) -> None:
        path = self._fresh(parts, entry)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out:
            shutil.copyfileobj(data, out, _CHUNK)
            os.fchmod(out.fileno(), stat.S_IMODE(mode) & ~_SETID)
        os.utime(path, (mtime, mtime), follow_symlinks=False)
        self._mark(parts)

    def symlink(self, entry: str, parts: list[str], target: str, mtime: float) -> None:
        if not target:
            raise self.error(entry, "a symlink with an empty target")
        # An absolute target is resolved against the image root by whoever follows it; a relative
        # one must not climb above the root from where the link is.
        depth = len(parts) - 1
        for p in ([] if target.startswith("/") else target.split("/")):
            depth += -1 if p == ".." else 0 if p in ("", ".") else 1
            if depth < 0:
                raise self.error(entry, f"a symlink to {target!r}, which climbs above the image root")
        path = self._fresh(parts, entry)
        os.symlink(target, path)
        os.utime(path, (mtime, mtime), follow_symlinks=False)
        self._mark(parts)

    def hardlink(self, entry: str, parts: list[str], target: str) -> None:
        tparts = _split(target)
        parent = self._parent(tparts, entry, create=False) if tparts else None
        src = parent / tparts[-1] if parent is not None and tparts else None
        if src is None or not os.path.lexists(src) or (src.is_dir() and not src.is_symlink()):
            raise self.error(entry, f"a hard link to {target!r}, which is not a file extracted "
                                    "earlier inside the image root")
        if tparts == parts:
            return
        path = self._fresh(parts, entry)
        os.link(src, path, follow_symlinks=False)
        self._mark(parts)

    def whiteout(self, entry: str, parts: list[str]) -> None:
        """`.wh.NAME` hides NAME; `.wh..wh..opq` hides everything lower layers put in its directory."""
        name = parts[-1]
        hidden = name.removeprefix(".wh.")
        if name != _OPAQUE and name.startswith(".wh..wh."):
            return  # aufs bookkeeping (.wh..wh.plnk...): hides nothing
        if name != _OPAQUE and hidden in ("", ".", ".."):
            raise self.error(entry, "a whiteout for no valid name")
        parent = self._parent(parts, entry, create=False)
        if parent is None:
            return
        prefix = parts[:-1]
        if name == _OPAQUE:
            self._clear_lower(parent, prefix)
        elif "/".join([*prefix, hidden]) not in self._this_layer:
            _rmtree(parent / hidden)

    def _clear_lower(self, directory: Path, prefix: list[str]) -> None:
        for child in sorted(os.listdir(directory)):
            rel = "/".join([*prefix, child])
            path = directory / child
            if rel not in self._this_layer:
                _rmtree(path)
            elif path.is_dir() and not path.is_symlink():
                self._clear_lower(path, [*prefix, child])

    def finish(self) -> None:
        """Apply directory modes and mtimes, deepest first (a 0500 parent would block its children)."""
        with self.entry("(directory modes)"):
            for rel, (mode, mtime) in sorted(self._dirs.items(), key=lambda kv: -kv[0].count("/")):
                path = self.root / rel
                if path.is_dir() and not path.is_symlink():
                    os.chmod(path, mode)
                    os.utime(path, (mtime, mtime))
