"""windows/amd64 and windows/386 programs under wine, natively on this x86-64 host's CPU.

Why a wineserver per cell (started by wine inside the cell's sandbox, on a private copy of the
prefix): a shared wineserver would outlive the cells and sit outside their pid namespace, so a timeout
could not reach what it started, and named objects, registry writes and files in C:\\ would leak from
one cell into the next; parallel cells would also share one prefix. The per-cell cost is a wineserver
start and a registry load (~0.3 s); the slow part, creating the prefix (wineboot, ~9 s), is done once
per process and the copy of it per cell leaves out the 700 MB of DLLs, which are bound read-only.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ... import install, paths, proc
from ...artifact import ArtifactFacts
from ...binfmt import pe_machine
from ...binfmt.writers import forwarder_dll
from ...errors import InfraError
from ...model import Evidence
from ...plan import Cell, Limits, RunSpec
from .. import sandbox
from .common import DEFAULT_PATH, bwrap_base, cell_env, run_sandboxed, version_of

WINE_FIX = f"install wine: `{install.WINE}` (Debian/Ubuntu; windows/386 also needs `{install.WINE32}`)"
WINE32_FIX = f"install 32-bit wine: `{install.WINE32}`"
WINE_ARCHES = ("amd64", "386")      # what wine on an x86-64 host executes

# Go 1.24+ needs bcryptprimitives.dll!ProcessPrng, which Wine added only in 8.13 (see forwarder_dll)
_PRNG_FORWARD = {"ProcessPrng": "advapi32.SystemFunction036"}


@dataclass(frozen=True)
class WinePrefix:
    """A wine prefix made once per process; cells run on private copies of it."""

    path: Path
    created_s: float
    wow64: bool                     # it can run 32-bit (windows/386) programs
    prng_shim: bool                 # bcryptprimitives.dll is xarch's forwarder, not wine's own


# The bulk of a prefix (~690 of its ~700 MB: wine's DLLs as PE files): bound read-only into each
# cell instead of copied. A Windows program cannot write there either without admin rights.
SHARED_PREFIX_DIRS = ("drive_c/windows/system32", "drive_c/windows/syswow64", "drive_c/windows/winsxs")


_prefix_lock = threading.Lock()
_prefix: WinePrefix | InfraError | None = None


def _wine_env(prefix: Path) -> dict[str, str]:
    # mscoree/mshtml disabled: wineboot would otherwise offer to download Mono and Gecko
    return {"WINEPREFIX": str(prefix), "WINEDEBUG": "-all", "HOME": "/tmp", "PATH": DEFAULT_PATH,
            "WINEDLLOVERRIDES": "mscoree,mshtml=;winemenubuilder.exe=d", "LANG": "C.UTF-8"}


def wine_prefix() -> WinePrefix:
    """The process's template prefix, created on first use (wineboot, in the sandbox, no network)."""
    global _prefix
    with _prefix_lock:
        if _prefix is None:
            try:
                _prefix = _create_prefix()
            except InfraError as e:
                _prefix = e
        if isinstance(_prefix, InfraError):
            raise _prefix
        return _prefix


def _create_prefix() -> WinePrefix:
    wine = proc.which("wine", WINE_FIX)
    root = paths.run_tmpdir("wine")
    atexit.register(shutil.rmtree, root, True)
    path = root / "prefix"
    path.mkdir()
    t0 = time.monotonic()
    # wineserver --wait: the registry is written when the server exits, a few seconds after wineboot
    fd, _no = sandbox.seccomp_fd()
    try:
        argv = [*bwrap_base(root, (wine,), fd, Limits()), "--bind", str(root), str(root), "--chdir", "/tmp",
                *sandbox.env_args(_wine_env(path)), "--", "/bin/sh", "-c",
                f'"{wine}" wineboot --init && wineserver --wait']
        r = proc.run(argv, timeout=300, pass_fds=(fd,) if fd is not None else ())
    finally:
        if fd is not None:
            os.close(fd)
    win = path / "drive_c" / "windows"
    if r.returncode != 0 or not (win / "system32" / "ntdll.dll").is_file():
        raise InfraError(f"wine could not create a prefix (wineboot: {_status(r)}; "
                         f"{(r.stderr or r.stdout).strip()[-300:]})", WINE_FIX)
    wow64 = (win / "syswow64" / "ntdll.dll").is_file()
    shim = not (win / "system32" / "bcryptprimitives.dll").exists()
    if shim:
        (win / "system32" / "bcryptprimitives.dll").write_bytes(
            forwarder_dll(0x8664, "bcryptprimitives.dll", _PRNG_FORWARD))
        if wow64:
            (win / "syswow64" / "bcryptprimitives.dll").write_bytes(
                forwarder_dll(0x14C, "bcryptprimitives.dll", _PRNG_FORWARD))
    return WinePrefix(path, time.monotonic() - t0, wow64, shim)


def _status(r: proc.Result) -> str:
    return f"signal {r.signal}" if r.signal else f"exit status {r.returncode}"


def _copy_prefix(template: Path, dest: Path) -> None:
    """A writable copy of the template without the shared DLL trees (empty mount points instead)."""
    shared = {template / s for s in SHARED_PREFIX_DIRS}

    def ignore(d: str, names: list[str]) -> list[str]:
        return [n for n in names if Path(d, n) in shared]

    shutil.copytree(template, dest, symlinks=True, ignore=ignore)
    for s in SHARED_PREFIX_DIRS:
        (dest / s).mkdir(parents=True, exist_ok=True)
    # no Z: drive: the program sees C:\ only, not the host's / (wine maps Z: to / by default)
    (dest / "dosdevices" / "z:").unlink(missing_ok=True)


def run_wine(cell: Cell, artifact: Path, run: RunSpec, tmp: Path, facts: ArtifactFacts,
              mk: Callable[..., Evidence]) -> Evidence:
    try:
        wine = proc.which("wine", WINE_FIX)
        prefix = wine_prefix()
    except InfraError as e:
        return mk(ran=False, infra=e.what, infra_fix=e.fix)
    machine = pe_machine(artifact)
    if machine == "386" and not prefix.wow64:
        return mk(ran=False, infra="wine here runs only 64-bit Windows programs (wine32 is missing), and "
                                   "this is a 32-bit (386) PE file", infra_fix=WINE32_FIX)
    cell_dir = Path(tempfile.mkdtemp(prefix="wine-", dir=tmp))
    try:
        t0 = time.monotonic()
        pfx = cell_dir / "prefix"
        _copy_prefix(prefix.path, pfx)
        exe_name = artifact.name if artifact.name.lower().endswith(".exe") else artifact.name + ".exe"
        (pfx / "drive_c" / "app").mkdir()
        (pfx / "drive_c" / "app" / exe_name).touch()
        copy_s = time.monotonic() - t0
        def argv_for(fd: int | None) -> list[str]:
            argv = [*bwrap_base(cell_dir, (wine,), fd, run.limits), "--bind", str(pfx), str(pfx)]
            for s in SHARED_PREFIX_DIRS:
                if (prefix.path / s).is_dir():
                    argv += ["--ro-bind", str(prefix.path / s), str(pfx / s)]
            return [*argv, "--ro-bind", str(artifact.resolve()), str(pfx / "drive_c" / "app" / exe_name),
                    "--chdir", str(pfx / "drive_c"),
                    *sandbox.env_args(cell_env(cell, run, _wine_env(pfx))),
                    "--", wine, f"C:\\app\\{exe_name}", *cell.args]
        r, limits, hardening = run_sandboxed(argv_for, run, run.timeout, run.stdin)
    finally:
        shutil.rmtree(cell_dir, ignore_errors=True)
    notes = [f"ran under {version_of(wine)} natively on this host's CPU: the profile's CPU model does not "
             "apply", f"wine prefix created once per process in {prefix.created_s:.1f} s; this cell ran on a "
             f"private copy of it ({copy_s:.2f} s) with its own wineserver, without network and without a Z: "
             "drive"]
    if prefix.prng_shim:
        notes.append("this wine has no bcryptprimitives.dll (added in Wine 8.13), which Go >= 1.24 needs: "
                     "xarch installed a forwarder ProcessPrng -> advapi32.SystemFunction036 in the prefix")
    return mk(ran=True, exit_code=r.returncode, signal=r.signal, stdout=r.stdout, stderr=r.stderr,
              duration_s=r.duration_s, timed_out=r.timed_out, emulator=wine, notes=tuple(notes),
              limits=limits, output_limited=r.output_limited, hardening=hardening,
              path=f"bwrap + wine ({version_of(wine)}), prefix copy per cell",
              foreign_runner="wine", pe_machine=machine or "?")

