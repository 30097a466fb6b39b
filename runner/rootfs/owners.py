"""Who owns each file of an image, kept beside its root filesystem rather than applied to it.

An image's files belong to root and, here and there, to its own user (distroless's /home/nonroot is
65532's; a Dockerfile's `COPY --chown`). On disk every file of a cached image belongs to whoever
built the cache: the local engine runs the cell's user as that same host user (bwrap maps one uid),
so the image's user reaches everything the image gives it, whether xrun runs as root or not. The
ownership the image declares is recorded in ``owners.json`` next to ``rootfs/`` (paths relative to
the root, only entries not owned by 0:0) and applied where ownership is real: the layer the docker
engine loads (engines/docker/archive.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from ._fs import _write_atomic

__all__ = ["OWNERS_FILE", "owners_of", "write_owners"]

OWNERS_FILE = "owners.json"


def write_owners(entry: Path, owners: Mapping[str, tuple[int, int]]) -> None:
    """Record `owners` (root-relative path -> (uid, gid)) for the image at entry/rootfs."""
    kept = {rel: list(ids) for rel, ids in sorted(owners.items()) if tuple(ids) != (0, 0)}
    _write_atomic(entry / OWNERS_FILE, json.dumps(kept, indent=0, sort_keys=True) + "\n")


def owners_of(rootfs: Path) -> dict[str, tuple[int, int]]:
    """The recorded ownership of an image's entries; every other entry is root's (0:0)."""
    try:
        doc = json.loads((rootfs.parent / OWNERS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    out: dict[str, tuple[int, int]] = {}
    for rel, ids in doc.items():
        if isinstance(rel, str) and isinstance(ids, list) and len(ids) == 2 and all(isinstance(i, int) for i in ids):
            out[rel] = (ids[0], ids[1])
    return out
