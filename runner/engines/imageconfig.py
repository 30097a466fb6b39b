"""What an image's config asks of a cell, in both engines: its `User`, `Env` and `WorkingDir`.

Images from elsewhere (rootfs/external.py) keep their config next to their root filesystem, as
`config.json`; xarch's rebuilt images have none and run as root in `/`, but a form of one
(`distroless-static:nonroot`) gives a User and WorkingDir the same way. A user name is
looked up in the image's own /etc/passwd (and a group name in its /etc/group), resolved inside the
image, never the host's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..rootfs import resolve_in_root

__all__ = ["ImageSettings", "settings_of"]


@dataclass(frozen=True)
class ImageSettings:
    """The uid:gid, environment and working directory a cell of this image runs with."""

    uid: int = 0
    gid: int = 0
    env: tuple[tuple[str, str], ...] = ()
    workdir: str = "/"
    user_text: str | None = None    # "uid 65532 (the image's USER nonroot)" when the image sets a user
    notes: tuple[str, ...] = ()     # e.g. a WorkingDir the image lacks

    @property
    def user(self) -> str:
        return f"{self.uid}:{self.gid}"


def _lookup(root: Path, file: str, name: str) -> tuple[int, int | None] | None:
    """(id, primary gid or None) of a name in the image's /etc/passwd or /etc/group."""
    p = resolve_in_root(root, f"/etc/{file}")
    if p is None or not p.is_file():
        return None
    try:
        lines = p.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for ln in lines:
        f = ln.split(":")
        if len(f) >= 3 and f[0] == name and f[2].isdigit():
            gid = int(f[3]) if file == "passwd" and len(f) > 3 and f[3].isdigit() else None
            return int(f[2]), gid
    return None


def _user(root: Path, text: str) -> tuple[int, int, str | None]:
    """uid, gid and a note for an image's User ("65532", "65532:65532", "nonroot", "app:staff")."""
    name, _, group = text.partition(":")
    note = None
    if name.isdigit():
        uid, gid = int(name), None
        found = None
    else:
        found = _lookup(root, "passwd", name)
        if found is None:
            return 0, 0, f"the image's USER {text!r} is not in its /etc/passwd: the cell ran as root"
        uid, gid = found
    if group:
        if group.isdigit():
            gid = int(group)
        elif (g := _lookup(root, "group", group)) is not None:
            gid = g[0]
        else:
            note = f"the image's USER group {group!r} is not in its /etc/group: gid {uid} used"
    return uid, gid if gid is not None else uid, note


def settings_of(rootfs: Path, config: Mapping[str, Any] | None = None) -> ImageSettings:
    """The settings an image's config.json gives (defaults when there is none), or `config`'s: the
    form of a builtin image (``distroless-static:nonroot``, rootfs/definitions.py)."""
    if config is not None:
        doc: Any = dict(config)
    else:
        try:
            doc = json.loads((rootfs.parent / "config.json").read_text())
        except (OSError, ValueError):
            return ImageSettings()
    if not isinstance(doc, dict):
        return ImageSettings()
    env = tuple((str(k), str(v)) for k, v in (doc.get("env") or []) if isinstance(k, str))
    notes: list[str] = []
    uid = gid = 0
    user_text = None
    if isinstance(doc.get("user"), str) and doc["user"]:
        uid, gid, note = _user(rootfs, doc["user"])
        if note:
            notes.append(note)
        elif uid != 0:
            user_text = f"uid {uid} (the image's USER {doc['user']})"
    wd = doc.get("workdir")
    workdir = wd if isinstance(wd, str) and wd.startswith("/") else "/"
    if workdir != "/":
        d = resolve_in_root(rootfs, workdir)
        if d is None or not d.is_dir():
            notes.append(f"the image's WorkingDir {workdir} does not exist in it: the cell ran in /")
            workdir = "/"
    return ImageSettings(uid, gid, env, workdir, user_text, tuple(notes))
