"""The stages after loading: build -> run -> classify -> report. CLI, pytest plugin and Action share them."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import forensics, model, paths, proc
from .artifact import inspect
from .build import BuildResult, run_build
from .build_inputs import ProjectState
from .classify import classify
from .engines import Engine
from .errors import InfraError, RecipeError, UnknownImage
from .model import Evidence, Verdict
from .plan import Cell, ImageSource, Plan, RunSpec


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    verdict: Verdict
    evidence: Evidence | None

    @property
    def passed(self) -> bool:
        """ok, or the xfail verdict the matrix demands (an unexpected ok of an xfail cell fails)."""
        if self.cell.xfail:
            return self.verdict.verdict == self.cell.xfail
        if self.verdict.verdict == "not-runnable" and not self.cell.target.runnable:
            return True     # e.g. darwin: only the build is checked, and it has its own verdict
        return self.verdict.ok


@dataclass
class RunResult:
    plan: Plan
    engine: str
    builds: list[BuildResult] = field(default_factory=list)
    cells: list[CellResult] = field(default_factory=list)
    interrupted: bool = False
    started: float = field(default_factory=time.time)

    def view(self) -> dict[str, Any]:
        """The fields the shared rules read, in the report's dict form (model.passed, model.summary)."""
        return {"interrupted": self.interrupted,
                "builds": [{"verdict": b.verdict, "reproducible": b.reproducible} for b in self.builds],
                "cells": [{"passed": c.passed, "xfail": c.cell.xfail, "verdict": c.verdict.verdict}
                          for c in self.cells],
                "summary": {"planned_cells": len(self.plan.cells)}}

    @property
    def passed(self) -> bool:
        return model.passed(self.view())

    def summary(self) -> dict[str, Any]:
        v = self.view()
        return model.summary(v["builds"], v["cells"], len(self.plan.cells))


T = TypeVar("T")
Progress = Callable[[str, str], None]     # (stage, item id) after each item


def _noop(stage: str, item: str) -> None:
    pass


def build_all(plan: Plan, jobs: int, progress: Progress = _noop,
              result: RunResult | None = None) -> dict[str, BuildResult]:
    """Build every target in parallel; results keyed by target spec."""
    state = ProjectState.of(plan.project, plan.builds)
    out: dict[str, BuildResult] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futs = {pool.submit(run_build, b, state): b for b in plan.builds}
        try:
            for f in _iter_done(list(futs)):
                r = f.result()
                out[r.job.target.spec] = r
                if result is not None:
                    result.builds.append(r)
                progress("build", r.job.target.spec)
        except BaseException:
            proc.stop()     # kill running trees and refuse new ones, so the pool drains at once
            for f in futs:
                f.cancel()
            raise
    return out


def _iter_done(pending: list[Future[T]]) -> Iterator[Future[T]]:
    # wait() with a timeout keeps the main thread responsive to Ctrl-C
    rest = set(pending)
    while rest:
        done, rest = wait(rest, timeout=0.2, return_when=FIRST_COMPLETED)
        if proc.stopping():     # Ctrl-C/SIGTERM: the signal handler only set the flag
            raise KeyboardInterrupt
        yield from done


def _builtin_image(cell: Cell, sources: Mapping[str, ImageSource]) -> tuple[str, str] | None:
    """(image, Debian arch) of a cell on one of xarch's own images; None for scratch and external images."""
    if cell.image in ("scratch", "none") or cell.image in sources:
        return None
    deb = cell.target.facts.debian_arch(cell.target.level)
    if deb is None:
        raise InfraError(f"image {cell.image} is not available for {cell.target.spec}: Debian has no "
                         f"packages for {cell.target.arch}", "use the scratch image for this target")
    return cell.image_base, deb


class RootfsProvider:
    """Resolves (image, Debian arch) to a root directory once per run, thread-safely."""

    def __init__(self, empty_root: Path, sources: Mapping[str, ImageSource] | None = None, *,
                 verified: Mapping[tuple[str, str], Path] | None = None) -> None:
        self.empty = empty_root
        self.sources = dict(sources or {})
        self._lock = threading.Lock()
        # `verified`: roots another process of this run already checked (session.RunFacts)
        self._cache: dict[tuple[str, str], Path | InfraError] = dict(verified or {})

    def get(self, cell: Cell) -> Path:
        if cell.image in ("scratch", "none"):
            return self.empty
        if cell.image in self.sources:
            return self._external(cell, self.sources[cell.image])
        key = _builtin_image(cell, self.sources)
        assert key is not None
        name, deb = key
        with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                fix = f"run `xrun images build {name} --arch {deb}` where a Debian mirror is reachable"
                try:
                    from .rootfs import ImageStore
                    hit = ImageStore().ensure(name, deb)
                except InfraError as e:  # ImageUnavailable and BuildError say why; the fix names this cell
                    hit = e if e.fix else InfraError(e.what, fix)
                except (RecipeError, UnknownImage, OSError) as e:  # costs the cells of that image, not the run
                    hit = InfraError(str(e), fix)
                self._cache[key] = hit
        if isinstance(hit, InfraError):
            raise hit
        return hit


    def _external(self, cell: Cell, src: ImageSource) -> Path:
        """The root of an image from elsewhere for this cell's platform, unpacked once (rootfs/external.py).

        A hostile or broken archive is the matrix's error (exit 2, naming the archive and the entry).
        """
        from .rootfs.external import unpack

        a = cell.target.facts
        variant = a.oci_variant(cell.target.level)
        key = (cell.image, f"{a.oci}/{variant}")
        with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                if src.kind == "docker":
                    from .rootfs.daemon import saved
                    kind, where = "docker-archive", saved(src.location, cell.target.os, a.oci, variant)
                else:
                    kind, where = src.kind, src.path
                hit = unpack(kind, where, os_=cell.target.os, arch=a.oci, variant=variant,
                             cache_dir=paths.cache_dir() / "images").root
                self._cache[key] = hit
        if isinstance(hit, InfraError):
            raise hit
        return hit


def run_cells(plan: Plan, engine: Engine, builds: dict[str, BuildResult], jobs: int,
              roots: RootfsProvider, progress: Progress = _noop,
              result: RunResult | None = None) -> list[CellResult]:
    """Run every cell whose build produced an artifact; classify each as it finishes."""
    out: list[CellResult] = []

    def one(cell: Cell) -> CellResult:
        b = builds.get(cell.target.spec)
        if b is None or not b.runnable or b.artifact is None:
            return CellResult(cell, unbuilt_verdict(cell, b), None)
        verdict, ev = run_built(cell, b.artifact, lambda: (engine, roots), plan.run)
        # classified against the whole output; the report keeps the tails
        return CellResult(cell, verdict, ev.trimmed() if ev is not None and cell.target.runnable else None)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futs = {pool.submit(one, c): c for c in plan.cells}
        try:
            for f in _iter_done(list(futs)):
                r = f.result()
                out.append(r)
                if result is not None:
                    result.cells.append(r)
                progress("run", r.cell.id)
        except BaseException:
            proc.stop()     # kill running trees and refuse new ones, so the pool drains at once
            for f in futs:
                f.cancel()
            raise
    order = {c.id: i for i, c in enumerate(plan.cells)}
    out.sort(key=lambda r: order[r.cell.id])
    return out


def verified_roots(plan: Plan) -> dict[tuple[str, str], Path]:
    """The plan's builtin images that are cached and verify now, by (image, Debian arch); builds nothing.

    One process checks them for all the processes of a run (the xdist controller for its workers), as
    `xrun run` checks each once per run; an image missing here is built by the first process that needs it.
    """
    from .rootfs import ImageStore

    keys: set[tuple[str, str]] = set()
    for cell in plan.cells:
        if cell.target.runnable:
            with contextlib.suppress(InfraError):
                if (key := _builtin_image(cell, plan.image_sources)) is not None:
                    keys.add(key)
    out: dict[tuple[str, str], Path] = {}
    store = ImageStore()
    for name, deb in sorted(keys):
        with contextlib.suppress(RecipeError, UnknownImage, OSError):
            if (root := store.path(name, deb)) is not None:
                out[(name, deb)] = root
    return out


def unbuilt_verdict(cell: Cell, b: BuildResult | None) -> Verdict:
    """The verdict of a cell whose build produced nothing runnable (both front ends use this)."""
    why = b.explanation.splitlines()[0] if b and b.explanation else "no artifact"
    return Verdict("not-runnable", f"not run: the build of {cell.target.spec} failed ({why})",
                   "fix the build first (see builds)")


def run_built(cell: Cell, artifact: Path, ready: Callable[[], tuple[Engine, RootfsProvider]],
              run: RunSpec) -> tuple[Verdict, Evidence | None]:
    """Run and classify one cell whose build produced an artifact (xrun and the pytest plugin).

    A target that cannot run here is classified from its file alone; `ready` (the engine and its
    image roots) is called only when a cell really runs, so such a plan never starts an engine.
    """
    if not cell.target.runnable:
        ev = Evidence(cell.id, "-", inspect(artifact), ran=False)
        return classify(cell, ev, run.expect, run.timeout), ev
    engine, roots = ready()
    try:
        root = roots.get(cell)
    except InfraError as e:
        return Verdict("infra-error", e.what, e.fix), None
    ev = forensics.enrich(cell, engine.run_cell(cell, artifact, root, run), artifact, root)
    return classify(cell, ev, run.expect, run.timeout), ev


def execute(plan: Plan, engine: Engine, jobs: int, progress: Progress = _noop,
            result: RunResult | None = None) -> RunResult:
    """Build, then run and classify; fills `result` as it goes so an interrupt keeps what finished."""
    res = result or RunResult(plan, engine.name)
    builds = build_all(plan, jobs, progress, res)
    roots = RootfsProvider(engine.empty_root, plan.image_sources)
    run_cells(plan, engine, builds, jobs, roots, progress, res)
    order = {b.target.spec: i for i, b in enumerate(plan.builds)}
    res.builds.sort(key=lambda b: order[b.job.target.spec])
    corder = {c.id: i for i, c in enumerate(plan.cells)}
    res.cells.sort(key=lambda c: corder[c.cell.id])
    return res
