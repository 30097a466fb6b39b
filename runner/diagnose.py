"""Why a build failed: the classic cross-compilation traps, recognised from the real build output.

`build_cause` is pure (log text + target facts in, cause + explanation + fix out) except for the
file-excluded-by-suffix case, which asks `go list` (under the target's env) which files of the
package were ignored, to name the one that defines the missing symbol, and the nested-module case,
which looks for the go.mod between the project and the package.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import platforms, proc
from .plan import BuildJob
from .toolchain import build_environ, go_bin_dir, zig_triple

_CGO_TOOLCHAIN = (
    re.compile(r"^# runtime/cgo\s*$", re.M),
)
_CGO_SYMPTOMS = (
    re.compile(r"gcc: error: unrecognized command[- ]line option '(-m[^']*)'"),
    re.compile(r"(gcc_\w+\.S):\d+: Error: (no such instruction|operand size mismatch)[^\n]*"),
    re.compile(r"Assembler messages:"),
    re.compile(r"fatal error: (bits/[\w.-]+|gnu/stubs-\w+\.h): No such file or directory"),
    re.compile(r"cannot find -l(c|pthread)\b"),
    re.compile(r"C compiler \"([^\"]+)\" not found"),
)
_EXCLUDED_ALL = re.compile(r"imports ([^\s:]+): build constraints exclude all Go files in (\S+)")
_UNDEFINED = re.compile(r"^(\S+\.go):(\d+):(\d+): undefined: (\w+)$", re.M)
_NOT_IN_MAIN = re.compile(r"main module \(([^)\s]+)\) does not contain package (\S+)")
_NOT_IN_WORKSPACE = re.compile(r"directory (\S+) is contained in a module that is not one of the workspace modules")
_DECL = r"^\s*(?:func(?:\s*\([^)]*\))?|var|const|type)\s+{name}\b|^\s+{name}\b\s*(?:=|\s\w)"


@dataclass(frozen=True)
class Cause:
    cause: str
    explanation: str
    fix: str


def build_cause(job: BuildJob, log: str, go: str | None = None) -> Cause | None:
    """The recognised cause of a failed build, or None (cause `other`)."""
    t = job.target
    env = job.env
    host = platforms.host_goarch()
    if env.get("CGO_ENABLED") == "1" and any(r.search(log) for r in _CGO_TOOLCHAIN):
        sym = next((m for r in _CGO_SYMPTOMS if (m := r.search(log))), None)
        if sym is not None and (t.arch != host or t.os != "linux") and not env.get("CC"):
            evidence = sym.group(0).strip()
            return Cause(
                "cgo-cross-compiler-missing",
                f"CGO_ENABLED=1 for {t.spec}, but the C compiler is the host's ({host}) gcc, which cannot "
                f"target {t.arch}: building runtime/cgo failed with '{evidence[:160]}'",
                f"give this target a C cross compiler: `cc: zig` in its matrix entry (zig cc -target "
                f"{zig_triple(t.arch, t.variant)}), or build with CGO_ENABLED=0 if you need no C (os/user "
                "and the DNS resolver then use Go's own implementations: /etc/passwd lookups only, no NSS)")
    if m := _EXCLUDED_ALL.search(log):
        pkg = m.group(1)
        users = _goos_gated_users(job.cwd, pkg)
        where = f" in {', '.join(users)}" if users else ""
        gated = " gated by a runtime.GOOS check" if users else ""
        return Cause(
            "platform-only-import",
            f"{pkg} has no Go file for GOOS={t.os} GOARCH={t.arch} (its files all carry build constraints "
            f"for other platforms), yet it is imported{where}{gated}: imports are resolved at compile time, "
            "runtime.GOOS only at run time",
            f"move the code that uses {pkg} into a file built only where it exists (e.g. x_windows.go, or "
            f"`//go:build windows`) and add a stub for the other platforms (`//go:build !windows`), so "
            f"{t.spec} never imports it")
    if (nested := _nested_module(job, log)) is not None:
        return nested
    und = _UNDEFINED.findall(log)
    if und:
        file, _line, _col, name = und[0]
        pkg_dir = (job.cwd / file).resolve().parent
        hit = _defined_in_ignored(pkg_dir, name, job, go)
        if hit is not None:
            fname, why = hit
            unixy = t.os in _UNIX
            fix = (f"if {fname} is meant for every Unix, rename it without the _<goos> suffix and start it "
                   "with `//go:build unix`" if unixy else
                   f"add a file that defines {name} for GOOS={t.os} (e.g. {_stem(fname)}_{t.os}.go)")
            fix += f"; or define {name} for the other platforms in a file with the opposite constraint"
            return Cause(
                "file-excluded-by-suffix",
                f"undefined: {name} for {t.spec}: it is defined only in {fname}, which {why}, so this "
                "target never compiles it",
                fix)
    return None


def _nested_module(job: BuildJob, log: str) -> Cause | None:
    """The package lives in a module of its own (a go.mod below the project, as golang/example's hello/):
    go builds only the main module's packages, so the project must be that module's directory."""
    if m := _NOT_IN_MAIN.search(log):
        main, pkg = m.group(1), m.group(2)
        if not pkg.startswith(main + "/"):
            return None
        pkg_dir = job.cwd / pkg.removeprefix(main + "/")
    elif w := _NOT_IN_WORKSPACE.search(log):
        pkg_dir = job.cwd / w.group(1)
    else:
        return None
    root = job.cwd.resolve()
    d = pkg_dir.resolve()
    while d != root and d.is_relative_to(root) and not (d / "go.mod").is_file():
        d = d.parent
    if d == root or not d.is_relative_to(root):
        return None     # no nested go.mod: some other reason the package is not there
    module = _module_path(d / "go.mod")
    base = (job.matrix_dir or root).resolve()
    project = os.path.relpath(d, base)
    inner = os.path.relpath(pkg_dir.resolve(), d)
    package = "." if inner == "." else f"./{inner}"
    return Cause(
        "nested-module",
        f"{os.path.relpath(d, root)}/go.mod makes {os.path.relpath(d, root)}/ a module of its own"
        + (f" ({module})" if module else "")
        + ", and go builds only packages of " + (f"the main module ({m.group(1)})" if m else "the modules go.work uses")
        + f" from the project directory {root}: '{_first_line(log, m or w)}'",
        f"build from that module: `project: {project}` and `package: {package}` in the matrix")


def _module_path(gomod: Path) -> str | None:
    try:
        m = re.search(r"^module\s+(\S+)", gomod.read_text(errors="replace"), re.M)
    except OSError:
        return None
    return m.group(1).strip('"') if m else None


def _first_line(log: str, m: re.Match[str] | None) -> str:
    if m is None:
        return ""
    start = log.rfind("\n", 0, m.start()) + 1
    end = log.find("\n", m.end())
    return log[start:end if end != -1 else len(log)].strip()[:200]


_UNIX = {"aix", "android", "darwin", "dragonfly", "freebsd", "hurd", "illumos", "ios", "linux", "netbsd",
         "openbsd", "solaris"}


def _stem(fname: str) -> str:
    base = Path(fname).stem
    parts = base.split("_")
    known = set(platforms.OSES) | set(platforms.ARCHES) | _UNIX
    while len(parts) > 1 and parts[-1] in known:
        parts.pop()
    return "_".join(parts)


def _goos_gated_users(root: Path, pkg: str) -> list[str]:
    """Go files under root that import pkg and test runtime.GOOS (the seed-bug-7 shape)."""
    out = []
    for f in sorted(root.rglob("*.go")):
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        if f'"{pkg}"' in text and "runtime.GOOS" in text:
            out.append(str(f.relative_to(root)))
    return out[:5]


def _defined_in_ignored(pkg_dir: Path, name: str, job: BuildJob, go: str | None) -> tuple[str, str] | None:
    """Which ignored file of the package (for this target) defines name, and why it was ignored."""
    ignored = _ignored_files(pkg_dir, job, go)
    pat = re.compile(_DECL.format(name=re.escape(name)), re.M)
    for f in ignored:
        p = pkg_dir / f
        try:
            text = p.read_text(errors="replace")
        except OSError:
            continue
        if pat.search(text):
            m = re.search(r"^//go:build (.+)$", text, re.M)
            stem_parts = Path(f).stem.split("_")
            suffix = [s for s in stem_parts[1:] if s in platforms.OSES or s in platforms.ARCHES or s in _UNIX]
            if suffix:
                why = (f"its _{'_'.join(suffix)}.go suffix limits to "
                       f"{'/'.join(suffix)} (an implicit build constraint)")
            elif m:
                why = f"its `//go:build {m.group(1).strip()}` line excludes {job.target.os}/{job.target.arch}"
            else:
                why = "a build constraint excludes"
            return f, why
    return None


def _ignored_files(pkg_dir: Path, job: BuildJob, go: str | None) -> list[str]:
    """IgnoredGoFiles of the package in pkg_dir under the target's GOOS/GOARCH (via `go list -json`)."""
    exe = go or str(Path(go_bin_dir()) / "go")
    try:
        r = proc.run([exe, "list", "-json", "."], cwd=str(pkg_dir), env=build_environ(job), timeout=60)
        data = json.loads(r.stdout) if r.stdout.strip() and not r.timed_out else {}
    except (OSError, ValueError):
        data = {}
    files = list(data.get("IgnoredGoFiles") or [])
    if not files:   # go list failed: fall back to the files whose name carries another platform
        files = [p.name for p in pkg_dir.glob("*_*.go") if not p.name.endswith("_test.go")]
    return files
