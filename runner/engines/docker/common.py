"""What the docker engine's modules share: names inside the container, the daemon's retry policy,
the outcome of one run, and the socket helpers both modes use."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
from docker.errors import APIError, NotFound
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from ... import install, proc
from ...plan import Cell
from ..launch import APP_BESIDE, APP_IN_ROOT, QEMU_IN_ROOT

MODES = ("container", "pool")
DEFAULT_MODE = "pool"               # every parity test passes in both modes; pool is ~3x cheaper
MODE_ENV = "XARCH_DOCKER_MODE"

LAYOUT = "2"                        # bump when the image layout (archive.py) changes: it is part of the tag
CELL_DIR = "/.xarch/cell"           # the artifact lives here; /app is a symlink into it (unless the image has /app)
APP_TARGET = APP_BESIDE
INIT_IN_ROOT = "/.xarch/init"
APP = APP_IN_ROOT
WAIT_SLICE_S = 0.5                  # how often a waiting cell looks at Ctrl-C

DAEMON_FIX = ("start the docker daemon: `sudo systemctl start docker` (or `sudo dockerd &` where systemd "
              "is not running), or use --engine local")
INSTALL_FIX = (f"install docker: `{install.DOCKER}` and start it with `sudo systemctl start "
               "docker` (or `sudo dockerd &`), or use --engine local")

OCI = ("OCI runtime exec failed", "OCI runtime create failed", "OCI runtime start failed")

__all__ = ["APP", "APP_TARGET", "CELL_DIR", "DAEMON_FIX", "DEFAULT_MODE", "INIT_IN_ROOT", "INSTALL_FIX",
           "LAYOUT", "MODES", "MODE_ENV", "OCI", "QEMU_IN_ROOT", "WAIT_SLICE_S", "Outcome", "Retries",
           "close_sock", "feed", "oci_platform", "stopping"]

T = TypeVar("T")


def stopping() -> bool:
    """Ctrl-C was pressed: proc.stop() was called (waits poll this to drain the worker pool fast)."""
    return proc.stopping()


def _transient(exc: BaseException) -> bool:
    """Daemon hiccups worth another attempt; never a verdict, never a deterministic runtime error."""
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(exc, APIError) and not isinstance(exc, NotFound):
        text = str(exc.explanation or exc)
        if any(s in text for s in OCI):
            return False        # runc refused the container: the same every time
        code = exc.status_code or 0
        return code >= 500 or (code == 409 and "already in use" in text)
    return False



class Retries:
    """Retries one daemon call on transient failures and counts the extra attempts for the evidence."""

    ATTEMPTS = 4

    def __init__(self) -> None:
        self.count = 0

    def _counted(self, state: RetryCallState) -> None:
        self.count += 1

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        for attempt in Retrying(stop=stop_after_attempt(self.ATTEMPTS),
                                wait=wait_exponential(multiplier=0.2, max=2.0),
                                retry=retry_if_exception(_transient), before_sleep=self._counted,
                                reraise=True):
            with attempt:
                return fn(*args, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover


def oci_platform(cell: Cell) -> tuple[str, str | None]:
    """(OCI arch, variant) of the image a cell runs in."""
    a = cell.target.facts
    return a.oci, a.oci_variant(cell.target.level)


@dataclass
class Outcome:
    """What running one command in docker left, before it becomes Evidence."""

    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    timed_out: bool = False
    infra: tuple[str, str] | None = None
    notes: list[str] = field(default_factory=list)
    oom_killed: bool = False
    pids_hit: bool = False
    output_limited: bool = False


def feed(sock: Any, data: str | bytes | None) -> None:
    """Write stdin on the attach/exec socket and half-close it, in the background."""
    raw = getattr(sock, "_sock", sock)
    payload = data.encode() if isinstance(data, str) else data or b""

    def send() -> None:
        with contextlib.suppress(OSError):
            raw.sendall(payload)
            raw.shutdown(socket.SHUT_WR)
    threading.Thread(target=send, daemon=True).start()


def close_sock(sock: Any) -> None:
    for obj in (getattr(sock, "_sock", None), sock):
        if obj is not None:
            with contextlib.suppress(Exception):
                obj.close()
