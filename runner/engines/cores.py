"""Guest core dumps for fault evidence: a second, bounded run of a cell that died of a fault signal.

qemu-user writes an ELF core of the *guest* (`qemu_<prog>_<time>_<pid>.core`, in its cwd) when
the program dies of an uncaught signal and RLIMIT_CORE allows; its NT_PRSTATUS note holds the PC.
Cells normally run with RLIMIT_CORE=0 and their own cwd, so a cell that died of SIGILL, SIGSEGV,
SIGBUS or SIGFPE without Go saying where is run once more, the same way, except:

- its cwd is a private directory of xrun's (bound at CORE_DIR in the sandbox), deleted once read;
- RLIMIT_CORE is CORE_LIMIT (the notes come first: a cut core still holds the PC), and
  RLIMIT_FSIZE the same, so no file the program writes there outgrows it;
- the directory holds a directory named `core`: qemu 7.2 also lets the kernel dump qemu itself,
  and the kernel's default core_pattern ("core", in the cwd) cannot replace a directory, so no host
  core is written. Where core_pattern is a pipe (systemd-coredump, apport) or an absolute path, the
  kernel would hand a core of qemu to the host, so guest cores stay off and the evidence says so.

qemu 7.2 writes no core for riscv64 (no USE_ELF_CORE_DUMP there). For such targets the second run
logs qemu's translated guest code instead (`-d in_asm`, bounded by the same RLIMIT_FSIZE): qemu
stops a translation block at the instruction it cannot translate, so the last instruction of the
log is the faulting one. That is the PC; the signal is the one the first run died of.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import tempfile
from pathlib import Path

from ..binfmt.elfcore import read_core

CORE_DIR = "/.xarch-core"
CORE_LIMIT = 256 * 1024


_NO_CORES = frozenset({"riscv64"})
_LOG = "qemu-in_asm.log"
_LOG_INSN = re.compile(r"^(0x[0-9a-f]+):\s+[0-9a-f]+\s+\S", re.M)


def has_cores(goarch: str) -> bool:
    """Whether qemu-user writes guest cores for this arch."""
    return goarch not in _NO_CORES


def log_args() -> list[str]:
    """qemu options that log translated guest code into the core directory (for arches with no cores)."""
    return ["-d", "in_asm", "-D", f"{CORE_DIR}/{_LOG}"]


def why_not() -> str | None:
    """Why guest cores cannot be taken on this host (None: they can)."""
    try:
        pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    except OSError:
        pattern = "core"
    if pattern.startswith("|") or "/" in pattern:
        return (f"no guest core taken: kernel.core_pattern is '{pattern[:80]}', which would also take a core "
                "of qemu itself out of the sandbox (set it to 'core' to let xrun read the faulting PC)")
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard != resource.RLIM_INFINITY and hard < CORE_LIMIT:
        return (f"no guest core taken: the hard core-size limit is {hard} bytes here "
                f"(`ulimit -Hc` must allow {CORE_LIMIT // 1024} KiB)")
    return None


def make_dir(parent: Path) -> Path:
    """A fresh private core directory, writable by whatever uid the cell runs as."""
    d = Path(tempfile.mkdtemp(prefix="core-", dir=parent))
    (d / "core").mkdir()
    os.chmod(d, 0o1777)
    return d


def preexec() -> None:
    """In the child of the second run, before exec: let qemu write a bounded guest core."""
    resource.setrlimit(resource.RLIMIT_CORE, (CORE_LIMIT, CORE_LIMIT))
    resource.setrlimit(resource.RLIMIT_FSIZE, (CORE_LIMIT, CORE_LIMIT))


def take(d: Path, signal: int = 0) -> tuple[int, int] | None:
    """(signal, pc) of the guest core qemu wrote into d, else the last instruction of its translation
    log with the given signal; d is removed either way."""
    try:
        for entry in sorted(d.glob("qemu_*.core")):
            if entry.is_file() and not entry.is_symlink() and (info := read_core(entry)) is not None:
                return info.signal, info.pc
        log = d / _LOG
        if signal and log.is_file() and not log.is_symlink():
            with open(log, "rb") as f:
                f.seek(max(0, log.stat().st_size - 8192))
                tail = f.read().decode("utf-8", "replace")
            found = _LOG_INSN.findall(tail)
            if found:
                return signal, int(found[-1], 16)
        return None
    finally:
        shutil.rmtree(d, ignore_errors=True)
