"""The docker engine: each cell in a container of its image, qemu started explicitly with -cpu.

It keeps the local engine's semantics so both engines give the same verdicts: the same static
checks before running (PT_INTERP against the image, the native profile refusing a foreign file),
the same injected /etc/hosts, /etc/resolv.conf and /etc/hostname, the same environment (PATH,
HOME=/, the arch's run_env such as GODEBUG for 386, recorded as a note), the artifact at /app, a
writable /tmp only when the image has one, no network, and `qemu-<arch>-static -cpu MODEL` bind-mounted
from the host and started explicitly (binfmt cannot pass -cpu). Docker itself adds HOSTNAME to the
environment, /.dockerenv and /sys; nothing classified depends on those.

Images are imported from the image rootfs directory as a docker-archive whose config carries the
architecture and variant (engine 20.10 ignores `docker import --platform`, and a wrong architecture
makes `--platform` try to pull), tagged by content so a later run reuses them.

Two modes, with the same verdicts (tests/e2e/test_docker_engine.py runs every one through both):
- "container": one `docker run --init --read-only --network none` per cell. tini is PID 1,
  so qemu never is (qemu as PID 1 ignores its own fatal signal and hangs after a target SIGILL), and
  a child killed by signal N shows as exit 128+N, which maps back to the signal as bwrap's does.
- "pool" (default): one long-lived container per (image, arch) per concurrent cell, each cell a
  `docker exec` (~110 ms a cell instead of ~330 ms).
  PID 1 is a 200-byte helper that ignores SIGCHLD (so the kernel reaps orphans) and, run as
  `init kill`, does kill(-1, SIGKILL): everything in the container but PID 1 dies, which is how a
  timeout kills the whole tree and how processes a cell leaves behind are removed before the next
  cell. /tmp and /dev/shm are host directories emptied between cells; a container that cannot be made
  fresh is replaced. Hosts without a helper (other than amd64/arm64) fall back to "container".

The modules: engine.py (DockerEngine, run_cell, container mode), pool.py (pool mode), archive.py
(the rootfs as an image), initelf.py (the pool's PID 1), ownership.py (labels, leftovers), common.py.
"""

from __future__ import annotations

from .archive import scan, write_archive
from .common import DEFAULT_MODE, MODE_ENV, MODES, oci_platform
from .engine import HARDENING, DockerEngine
from .initelf import helper_elf
from .ownership import owner_alive, owner_label

__all__ = ["DEFAULT_MODE", "HARDENING", "MODES", "MODE_ENV", "DockerEngine", "helper_elf", "oci_platform",
           "owner_alive", "owner_label", "scan", "write_archive"]
