"""Assembling a root filesystem from unpacked .debs and a definition, and checking one against its manifest.

Every image uses a merged-/usr layout: /bin, /sbin and /lib* are symlinks
into /usr, and package content under them is moved there. This makes the
same definition work with suites that ship either layout.

Paths are always resolved inside the image (never through a symlink that leads out of it): a package or
a definition must not be able to write on the host.
"""

from __future__ import annotations

import fnmatch
import json
import os
import posixpath
import shutil
import stat
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from ..errors import BuildError
from ._fs import _sha256_file, resolve_in_root
from .apt import Progress, _extract
from .definitions import ImageDef, _subst
from .owners import write_owners

#: "quick" trusts unchanged size, mtime and inode; "full" hashes everything.
Verify = Literal["quick", "full"]

_MANIFEST_FORMAT = 1
_MERGED_DIRS = frozenset({"bin", "sbin", "lib", "lib32", "lib64", "libx32", "libo32"})
_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def _remap(rel: str) -> str:
    """Map a root-relative path to its merged-/usr location."""
    head = rel.split("/", 1)[0]
    return f"usr/{rel}" if head in _MERGED_DIRS else rel



def _ensure_dir(root: Path, rel: str, mode: int = 0o755) -> Path:
    """Create ``rel`` below root, refusing symlinked parents (they could escape root)."""
    cur = root
    parts = [p for p in rel.split("/") if p]
    for i, part in enumerate(parts):
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            cur.mkdir()
            # Only the leaf gets the requested mode; parents are plain 0755.
            os.chmod(cur, mode if i == len(parts) - 1 else 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise BuildError(f"/{rel}: /{cur.relative_to(root)} exists and is not a directory")
    return cur


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def _merge_tree(src: Path, root: Path, rel: str, excluded: Callable[[str], bool]) -> None:
    """Move an unpacked package tree into root, applying the /usr merge."""
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        orig = f"{rel}/{entry.name}" if rel else entry.name
        dest_rel = _remap(orig)
        if excluded("/" + dest_rel):
            continue
        dest = root / dest_rel
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
                _remove(dest)
            _ensure_dir(root, dest_rel, stat.S_IMODE(st.st_mode))
            _merge_tree(Path(entry.path), root, orig, excluded)
            continue
        if not rel and entry.name in _MERGED_DIRS:
            # The top-level /usr links are ours.
            continue
        _ensure_dir(root, posixpath.dirname(dest_rel))
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(entry.path)
            if not target.startswith("/") and dest_rel != orig:
                # Keep a relative link pointing at the same (merged) place.
                absolute = posixpath.normpath(posixpath.join("/", posixpath.dirname(orig), target))
                mapped = "/" + _remap(absolute.lstrip("/")) if absolute != "/" else "/"
                target = posixpath.relpath(mapped, "/" + posixpath.dirname(dest_rel))
            dest.unlink(missing_ok=True)
            os.symlink(target, dest)
        else:
            os.replace(entry.path, dest)


def _assemble(
    defn: ImageDef,
    debs: list[Path],
    rootfs: Path,
    values: Mapping[str, str],
    progress: Progress | None,
) -> None:
    rootfs.mkdir(mode=0o755)
    os.chmod(rootfs, 0o755)
    owners: dict[str, tuple[int, int]] = {}     # recorded, not applied: see rootfs/owners.py
    if debs or defn.packages:
        for d in ("bin", "sbin", "lib"):
            _ensure_dir(rootfs, f"usr/{d}")
            os.symlink(f"usr/{d}", rootfs / d)
    patterns = [_subst(p, values) for p in defn.exclude]

    def excluded(guest: str) -> bool:
        return any(fnmatch.fnmatchcase(guest, p) for p in patterns)

    if debs:
        staging = rootfs.parent / "staging"
        dests = [staging / str(i) for i in range(len(debs))]
        with ThreadPoolExecutor(max_workers=min(8, len(debs))) as pool:
            list(pool.map(_extract, debs, dests))
        for i, tree in enumerate(dests):
            if progress is not None:
                progress("unpack", i + 1, len(dests))
            _merge_tree(tree, rootfs, "", excluded)
        shutil.rmtree(staging)
        for d in sorted(_MERGED_DIRS - {"bin", "sbin", "lib"}):
            if (rootfs / "usr" / d).is_dir() and not os.path.lexists(rootfs / d):
                os.symlink(f"usr/{d}", rootfs / d)

    for guest in sorted(defn.dirs):
        spec = defn.dirs[guest]
        rel = _remap(_subst(guest, values).lstrip("/"))
        path = _ensure_dir(rootfs, rel, spec.mode)
        os.chmod(path, spec.mode)
        if spec.owner is not None:
            owners[rel] = spec.owner
    for guest in sorted(defn.files):
        fspec = defn.files[guest]
        rel = _remap(_subst(guest, values).lstrip("/"))
        _ensure_dir(rootfs, posixpath.dirname(rel))
        path = rootfs / rel
        if os.path.lexists(path):
            _remove(path)
        path.write_text(_subst(fspec.content, values), encoding="utf-8")
        os.chmod(path, fspec.mode)
        if fspec.owner is not None:
            owners[rel] = fspec.owner
    if "ca-bundle" in defn.generate:
        _generate_ca_bundle(rootfs)
    for guest in sorted(defn.symlinks):
        rel = _remap(_subst(guest, values).lstrip("/"))
        _ensure_dir(rootfs, posixpath.dirname(rel))
        path = rootfs / rel
        if os.path.lexists(path):
            _remove(path)
        os.symlink(_subst(defn.symlinks[guest], values), path)
    for want in defn.expect:
        guest = _subst(want, values)
        found = resolve_in_root(rootfs, guest)
        if found is None or not found.exists():
            raise BuildError(f"{defn.name}: expected {guest} is missing after the build")
    write_owners(rootfs.parent, owners)


def _generate_ca_bundle(rootfs: Path) -> None:
    """What update-ca-certificates would write (its postinst does not run here)."""
    certs_dir = rootfs / "usr/share/ca-certificates"
    certs = sorted(certs_dir.rglob("*.crt")) if certs_dir.is_dir() else []
    if not certs:
        raise BuildError("ca-bundle: no .crt files under /usr/share/ca-certificates")
    chunks = []
    for crt in certs:
        data = crt.read_bytes()
        chunks.append(data if data.endswith(b"\n") else data + b"\n")
    rel = _CA_BUNDLE.lstrip("/")
    _ensure_dir(rootfs, posixpath.dirname(rel))
    target = rootfs / rel
    if os.path.lexists(target):
        _remove(target)
    target.write_bytes(b"".join(chunks))
    os.chmod(target, 0o644)


def _scan(rootfs: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """Manifest entries of every path below rootfs, and the total file size."""
    files: dict[str, dict[str, Any]] = {}
    total = 0
    base = str(rootfs)
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                files[rel] = {"type": "symlink", "target": os.readlink(full)}
            elif stat.S_ISDIR(st.st_mode):
                files[rel] = {"type": "dir", "mode": stat.S_IMODE(st.st_mode)}
            elif stat.S_ISREG(st.st_mode):
                files[rel] = {
                    "type": "file",
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "ino": st.st_ino,
                    "mode": stat.S_IMODE(st.st_mode),
                    "sha256": _sha256_file(full),
                }
                total += st.st_size
            else:
                raise BuildError(f"/{rel}: unexpected file type in the image")
    return dict(sorted(files.items())), total


_KINDS = {"file": stat.S_ISREG, "dir": stat.S_ISDIR, "symlink": stat.S_ISLNK}


def _verify_entry(entry: Path, level: Verify) -> dict[str, Any] | None:
    """The entry's manifest if the entry is intact, else None.

    "quick" hashes a file only when its size, mtime or inode differs from the manifest (a write, a
    replacement, a copy of the cache); "full" hashes every file and checks every symlink. Nothing
    outside the manifest may appear either (a planted /etc/ld.so.preload is a change too).
    """
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != _MANIFEST_FORMAT:
        return None
    base = str(entry / "rootfs")
    files = manifest.get("files")
    if not isinstance(files, dict) or not os.path.isdir(base):
        return None
    try:
        for rel, meta in files.items():
            full = os.path.join(base, rel)
            st = os.lstat(full)
            kind = meta["type"]
            if not _KINDS[kind](st.st_mode):
                return None
            if kind == "file":
                if st.st_size != meta["size"] or stat.S_IMODE(st.st_mode) != meta["mode"]:
                    return None
                changed = st.st_mtime_ns != meta["mtime_ns"] or st.st_ino != meta.get("ino", st.st_ino)
                if (level == "full" or changed) and _sha256_file(full) != meta["sha256"]:
                    return None
            elif kind == "symlink" and os.readlink(full) != meta["target"]:
                return None
        if level == "full" and _extra_paths(base, files):
            return None
    except (OSError, KeyError, TypeError):
        return None
    return manifest


def _extra_paths(base: str, files: dict[str, Any]) -> list[str]:
    """Paths below base that the manifest does not list."""
    extra = []
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        for name in dirnames + filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel not in files:
                extra.append(rel)
    return extra


def verify_report(entry: Path) -> list[str]:
    """Every difference between an entry and its manifest (empty when intact): `xrun images verify`."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return ["manifest.json is missing or unreadable"]
    base = str(entry / "rootfs")
    out = []
    for rel, meta in files.items():
        full = os.path.join(base, rel)
        try:
            st = os.lstat(full)
        except OSError:
            out.append(f"/{rel}: missing")
            continue
        kind = meta.get("type")
        if kind not in _KINDS or not _KINDS[kind](st.st_mode):
            out.append(f"/{rel}: no longer a {kind}")
        elif kind == "file" and (st.st_size != meta.get("size") or _sha256_file(full) != meta.get("sha256")):
            out.append(f"/{rel}: content changed")
        elif kind == "file" and stat.S_IMODE(st.st_mode) != meta.get("mode"):
            out.append(f"/{rel}: mode changed to {stat.S_IMODE(st.st_mode):o}")
        elif kind == "symlink" and os.readlink(full) != meta.get("target"):
            out.append(f"/{rel}: symlink now points to {os.readlink(full)}")
    out += [f"/{rel}: not in the image's manifest" for rel in _extra_paths(base, files)]
    return out

