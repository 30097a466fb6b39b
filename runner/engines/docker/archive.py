"""An image rootfs directory as a `docker save` archive: one layer, a config naming the architecture.

Why an archive rather than `docker import --platform`: engine 20.10 ignores that flag, and a wrong
architecture in the config makes `--platform` try to pull. The tree digest (names, modes, the recorded owners,
sizes, mtimes, link targets) is part of the tag, so a later run reuses an image it already imported.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...rootfs.owners import owners_of
from ..launch import DEFAULT_PATH, INJECTED_ETC
from .common import APP_TARGET

_SKIP_TOP = (".xarch", "proc", "dev", "sys")
_SKIP_ETC = frozenset(f"etc/{n}" for n in INJECTED_ETC)


@dataclass(frozen=True)
class Tree:
    """One walk of a rootfs: its entries (relative paths, in walk order) and their digest."""

    root: Path
    entries: tuple[str, ...]
    digest: str
    owners: Mapping[str, tuple[int, int]] = field(default_factory=dict)


def scan(root: Path) -> Tree:
    """Walk the rootfs once; the digest and the layer both come from this walk."""
    h = hashlib.sha256()
    entries: list[str] = []
    if root.is_dir():
        for dirpath, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(dirs + files):
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                link = os.readlink(p) if os.path.islink(p) else ""
                rel = os.path.relpath(p, root)
                entries.append(rel)
                h.update(f"{rel}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{link}\n".encode())
    owners = owners_of(root)
    h.update(json.dumps(sorted(owners.items())).encode())
    return Tree(root, tuple(entries), h.hexdigest(), owners)


def _skip_in_layer(rel: str) -> bool:
    """Entries the container gets from elsewhere, as in the local engine's layout."""
    return rel.split("/", 1)[0] in _SKIP_TOP or rel in _SKIP_ETC


def _write_layer(tree: Tree, out: io.BufferedIOBase) -> None:
    """The image rootfs as an uncompressed layer tar, plus /app -> the cell's artifact."""
    def norm(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        # the image's own ownership (rootfs/owners.py), not the cache's on-disk owner
        ti.uid, ti.gid = tree.owners.get(ti.name, (0, 0))
        ti.uname = ti.gname = ""
        return ti

    skipped: list[str] = []         # skipped entries: nothing below them goes in either
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in tree.entries:
            if _skip_in_layer(rel) or any(rel.startswith(s + "/") for s in skipped):
                skipped.append(rel)
                continue
            tar.add(os.path.join(tree.root, rel), arcname=rel, recursive=False, filter=norm)
        if "app" not in tree.entries:   # an image's own /app stays: the cell runs APP_TARGET (launch.app_path)
            link = tarfile.TarInfo("app")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, APP_TARGET, 0o777
            tar.addfile(link)


def write_archive(tree: Tree, tag: str, arch: str, variant: str | None, labels: Mapping[str, str],
                  dest: Path) -> None:
    """A `docker save`-format archive of one layer whose config names the architecture."""
    layer = dest.with_suffix(".layer")
    with open(layer, "wb") as f:
        _write_layer(tree, f)
    with open(layer, "rb") as f:
        diff = hashlib.file_digest(f, "sha256").hexdigest()
    cfg: dict[str, Any] = {
        "architecture": arch, "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/", "Labels": dict(labels)},
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
