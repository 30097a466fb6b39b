"""Which xrun owns a container, and removing what crashed runs left behind.

Every container carries its run id and an owner label (host, pid namespace, pid and the pid's start
time, which tells a reused pid apart). A later engine removes a container whose owner on this host is
dead; one from another host or pid namespace only once it has exited and is older than STALE_S.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

from docker.errors import DockerException

from .common import Retries

LABEL_RUN, LABEL_CELL, LABEL_OWNER, LABEL_MODE = "xarch.run", "xarch.cell", "xarch.owner", "xarch.mode"
STALE_S = 60.0                      # a foreign run's exited container older than this is garbage


def _pid_start(pid: int) -> str | None:
    """The start time of a pid (field 22 of /proc/PID/stat), which tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _pidns() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return "?"


def owner_label() -> str:
    """Who owns a container: host, pid namespace, pid and its start time."""
    return f"{socket.gethostname()}|{_pidns()}|{os.getpid()}|{_pid_start(os.getpid())}"


def owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host and pid namespace; None when it is someone else's."""
    parts = owner.split("|")
    if len(parts) != 4 or parts[0] != socket.gethostname() or parts[1] != _pidns():
        return None
    try:
        pid = int(parts[2])
    except ValueError:
        return False
    return _pid_start(pid) == parts[3]


def list_containers(client: Any, label: str) -> list[dict[str, Any]]:
    """Containers with a label, from the list endpoint alone: the SDK's list() inspects each one
    and fails when another run removes one in between."""
    return list(Retries().call(client.api.containers, all=True, filters={"label": label}))


def remove_leftovers(client: Any, run_id: str) -> int:
    """Remove containers of earlier runs that crashed (owner dead, or foreign, exited and stale)."""
    n = 0
    for c in list_containers(client, LABEL_RUN):
        labels = c.get("Labels") or {}
        if labels.get(LABEL_RUN) == run_id:
            continue
        alive = owner_alive(labels.get(LABEL_OWNER, ""))
        if alive is None:
            age = time.time() - float(c.get("Created") or 0)
            alive = c.get("State") == "running" or age < STALE_S
        if not alive:
            with contextlib.suppress(DockerException):
                client.api.remove_container(c["Id"], force=True)
                n += 1
    return n
