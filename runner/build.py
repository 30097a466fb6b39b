"""The build stage: one build per target, in parallel, cached by its inputs, checked against the target."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from . import proc
from .artifact import ArtifactFacts, check_against_target, inspect
from .build_inputs import ProjectState, file_sha256, go_env, output_excludes, source_key, toolchain_id
from .diagnose import Cause, build_cause
from .paths import cache_dir
from .plan import REPRO_OUTPUT, BuildJob
from .toolchain import build_environ

LOG_TAIL = 16 * 1024
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


def cache_key(job: BuildJob, env: Mapping[str, str], sources: dict[str, Any]) -> str:
    """The build's inputs: its sources (build_inputs.source_key), command, Go environment and toolchain."""
    blob = json.dumps({"sources": sources, "argv": job.argv, "shell": job.shell, "before": job.before,
                       "env": sorted(job.env.items()), "go env": sorted(go_env(env).items()),
                       "go": toolchain_id(), "out": str(job.output), "v": 2}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _run(argv: tuple[str, ...], shell: bool, env: dict[str, str], cwd: Path) -> proc.Result:
    cmd = ["/bin/sh", "-c", argv[0]] if shell else list(argv)
    if not shell:
        exe = shutil.which(cmd[0], path=env.get("PATH"))
        if exe is None:
            return proc.Result(tuple(cmd), 127, None, "", f"xrun: command not found: {cmd[0]}\n", 0.0)
        cmd[0] = exe
    return proc.run(cmd, env=env, cwd=str(cwd), tail_bytes=LOG_TAIL)


def run_build(job: BuildJob, state: ProjectState) -> BuildResult:
    """Build one target (or reuse an intact artifact whose inputs are unchanged) and check it."""
    if job.prebuilt:
        if not job.output.is_file():
            return _failed(job, "", 0.0, f"the prebuilt artifact {job.output} does not exist",
                           fix="run the release build (e.g. goreleaser build --snapshot) first")
        return _check(job, f"prebuilt: {job.output}", 0.0, cached=True)
    stamps = cache_dir() / "builds"
    stamps.mkdir(parents=True, exist_ok=True)
    name = hashlib.sha256(str(job.output).encode()).hexdigest()[:24]
    with FileLock(str(stamps / f"{name}.lock")):
        env = build_environ(job)
        key = cache_key(job, env, source_key(job, env, stamps / f"{name}.inputs.json", state))
        stamp = stamps / f"{name}.json"
        if job.output.is_file() and stamp.is_file():
            try:
                st = json.loads(stamp.read_text())
            except (OSError, ValueError):
                st = {}
            if st.get("key") == key and st.get("sha256") == file_sha256(job.output):
                return _check(job, st.get("log", ""), 0.0, cached=True, repro=st.get("repro"))
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
            cause = build_cause(job, log)
            return _failed(job, log, total, f"the build command failed with {_status(r)}", cause=cause)
        if not job.output.is_file():
            return _failed(job, log, total, f"the build command succeeded but wrote no {job.output_rel}",
                           fix="make the command write to {{ output }} (the rendered build.output)")
        repro = None
        if job.reproducible:
            repro, rlog = check_reproducible(job, env)
            log = (log + "\n" + rlog)[-LOG_TAIL:]
        stamp.write_text(json.dumps({"key": key, "sha256": file_sha256(job.output), "log": log,
                                     "repro": repro}))
        return _check(job, log, total, repro=repro)


def _status(r: proc.Result) -> str:
    return f"signal {r.signal}" if r.signal else f"exit status {r.returncode}"


def _failed(job: BuildJob, log: str, dur: float, what: str, fix: str | None = None,
            cause: Cause | None = None) -> BuildResult:
    tail = "\n".join(log.strip().splitlines()[-6:])
    if cause is not None:
        return BuildResult(job, "build-failed", cause.cause, None, None, dur,
                           f"{cause.explanation}; the log ends with:\n{tail}", cause.fix, log)
    return BuildResult(job, "build-failed", "other", None, None, dur,
                       f"{what}; the log ends with:\n{tail}",
                       fix or "read the build log (in the report's `log`); run the same command with the "
                              "same GOOS/GOARCH to reproduce", log)


def _check(job: BuildJob, log: str, dur: float, cached: bool = False,
           repro: dict[str, Any] | None = None) -> BuildResult:
    facts = inspect(job.output)
    t = job.target
    mm = check_against_target(facts, t.os, t.arch, t.variant)
    same = repro.get("same") if repro else None
    if mm is not None:
        return BuildResult(job, "artifact-mismatch", None, job.output, same, dur, mm.explanation, mm.fix,
                           log, cached, facts)
    if repro and not repro.get("same"):
        return BuildResult(job, "ok", None, job.output, False, dur, repro.get("explanation"), repro.get("fix"),
                           log, cached, facts)
    return BuildResult(job, "ok", None, job.output, same, dur, None, None, log, cached, facts)


def check_reproducible(job: BuildJob, env: dict[str, str]) -> tuple[dict[str, Any], str]:
    """Build again from a copy of the project at another absolute path; compare the bytes."""
    with tempfile.TemporaryDirectory(prefix=f"xarch-repro-{os.getpid()}-") as tmp:
        copy = Path(tmp) / "elsewhere" / job.cwd.name
        excl = output_excludes((job,))
        shutil.copytree(job.cwd, copy, symlinks=True,
                        ignore=lambda d, names: [n for n in names if (Path(d) / n).resolve() in excl])
        out2 = Path(tmp) / "second" / job.output.name
        out2.parent.mkdir()
        argv = tuple(a.replace(REPRO_OUTPUT, str(out2)) for a in job.repro_argv)
        r = _run(argv, job.shell, env, copy)
        log = f"$ (reproducibility, in {copy}) {' '.join(argv)}\n{r.stdout}{r.stderr}"
        if r.returncode != 0 or not out2.is_file():
            return ({"same": False, "explanation": f"the second build (from {copy}) failed with {_status(r)}",
                     "fix": "make the build independent of the checkout location"}, log)
        a, b = job.output.read_bytes(), out2.read_bytes()
        if a == b:
            return {"same": True}, log
        return _why_different(job, a, b, str(copy)), log


def _why_different(job: BuildJob, a: bytes, b: bytes, other_dir: str) -> dict[str, Any]:
    """Name what differs between two builds of the same inputs, and the flags that remove it."""
    from .buildinfo import read_build_info

    reasons, fixes = [], []
    if str(job.cwd).encode() in a or other_dir.encode() in b:
        reasons.append(f"embedded source paths ({job.cwd} vs {other_dir})")
        fixes.append("-trimpath")
    with tempfile.TemporaryDirectory(prefix=f"xarch-bi-{os.getpid()}-") as t:
        pa, pb = Path(t) / "a", Path(t) / "b"
        pa.write_bytes(a)
        pb.write_bytes(b)
        ia, ib = read_build_info(pa), read_build_info(pb)
    if ia and ib:
        va = {k: v for k, v in ia.settings.items() if k.startswith("vcs")}
        vb = {k: v for k, v in ib.settings.items() if k.startswith("vcs")}
        if va != vb:
            reasons.append(f"the VCS stamp ({', '.join(sorted(set(va) | set(vb)))} differ: one checkout has "
                           "version-control metadata, the other not or another state)")
        if va or vb:
            # identical here, but a dirty tree or a shallow clone on another builder changes it
            fixes.append("-buildvcs=false")
        if ia.settings.get("-ldflags") != ib.settings.get("-ldflags"):
            reasons.append("the recorded -ldflags")
    if b"Go build ID" in a or b"\xff Go buildinf" in a:
        if not reasons or "-trimpath" not in fixes:
            reasons.append("the Go build ID (it hashes the inputs, so any difference above changes it too)")
        fixes.append("-ldflags=-buildid=")
    fixes_s = " ".join(dict.fromkeys(fixes))
    return {"same": False,
            "explanation": f"two builds of the same inputs from different directories differ ({len(a)} vs "
                           f"{len(b)} bytes): " + "; ".join(reasons or ["unknown bytes (timestamps?)"]),
            "fix": f"build with {fixes_s} and pin the toolchain (a `toolchain go1.x.y` line in go.mod, "
                   "GOTOOLCHAIN=local)"}
