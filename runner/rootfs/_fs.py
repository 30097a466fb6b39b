"""File helpers the image modules share: atomic writes, hashing, removing what a build left."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

from .. import paths


def _write_atomic(path: Path, text: str) -> None:
    paths.write_text_atomic(path, text)


def _sha256_file(path: Path | str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()



def _tree_size(path: Path) -> int:
    total = 0
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


def _rmtree(path: Path) -> int:
    """Remove path (making read-only dirs writable first); return bytes freed."""
    if not os.path.lexists(path):
        return 0
    size = _tree_size(path)
    if path.is_dir() and not path.is_symlink():
        # Unpacked packages may contain read-only directories (non-root can't empty them).
        os.chmod(path, 0o755)
        for dirpath, dirnames, _names in os.walk(path):
            for d in dirnames:
                full = os.path.join(dirpath, d)
                if not os.path.islink(full):
                    os.chmod(full, 0o755)
        shutil.rmtree(path)
    else:
        path.unlink()
    return size


def resolve_in_root(root: Path, guest: str, hops: int = 40) -> Path | None:
    """Resolve a guest path as the guest would, never leaving root."""
    parts = [p for p in guest.split("/") if p]
    resolved: list[str] = []
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        host = root.joinpath(*resolved, part)
        if host.is_symlink():
            hops -= 1
            if hops < 0:
                return None
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        if not os.path.lexists(host):
            return None
        resolved.append(part)
    return root.joinpath(*resolved)
