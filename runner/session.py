"""One run's state for both front ends: the plan, memoised builds, the preflight, one engine.

`xrun run` and `pytest --xarch` must agree on everything a user can see: which cells a selection
keeps, what is checked before anything runs, and the verdict of a cell whose build failed. They
share this object, so those rules exist once (the pytest plugin only maps it onto pytest items).

Under pytest-xdist the controller works out what every worker would otherwise repeat (the plan, the
preflight, the verification of cached images) once, as `RunFacts`, and each worker
starts from them (`Session.from_facts`): a worker's set-up is then only its engine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import proc
from .build import BuildResult, run_build
from .build_inputs import ProjectState
from .engines import Engine, make_engine
from .errors import InfraError
from .model import Evidence, Verdict
from .pipeline import RootfsProvider, run_built, unbuilt_verdict, verified_roots
from .plan import Cell, Plan, RunSpec


@dataclass(frozen=True, kw_only=True)
class RunFacts:
    """What one process checked for a whole run, so other processes of that run need not check again.

    The xdist controller makes it and hands it to each worker (pickled): the selected plan, whether
    the preflight passed, and the cached images that verified. (What a build reads is keyed per
    target, build_inputs.py: a worker works that out for the builds it runs, from shared caches.)
    """

    plan: Plan
    preflight_ok: bool
    roots: Mapping[tuple[str, str], Path] = field(default_factory=dict)


class Session:
    """Load and select once; build each target once (on demand); start the engine on first use."""

    def __init__(self, matrix_path: Path, only: Sequence[tuple[str, str]] = (), engine: str = "local", *,
                 shard: tuple[int, int] | None = None, prebuilt: Mapping[str, Path] | None = None) -> None:
        self.matrix_path = matrix_path
        self.engine_name = engine
        self._only = tuple(only)
        self._shard = shard
        self._prebuilt = prebuilt
        self._plan: Plan | None = None
        self._checked = False
        self._builds: dict[str, BuildResult] = {}
        self._sources: ProjectState | None = None
        self._engine: Engine | None = None
        self._roots: RootfsProvider | None = None
        self._verified_roots: Mapping[tuple[str, str], Path] = {}

    @classmethod
    def from_facts(cls, facts: RunFacts, matrix_path: Path, engine: str = "local") -> Session:
        """A session that starts from what another process of the run already checked (an xdist worker)."""
        s = cls(matrix_path, engine=engine)
        s._plan, s._checked = facts.plan, facts.preflight_ok
        s._verified_roots = dict(facts.roots)
        return s

    def facts(self) -> RunFacts:
        """Check once what every process of this run needs: the plan, the preflight, the images.

        A failed preflight is not handed on: each worker then runs it itself and reports it on its cells,
        as without xdist. Nothing is built here (an image that is not cached is built by the first
        worker that needs it, under the store's lock).
        """
        plan = self.plan()
        with contextlib.suppress(InfraError):
            self.preflight()
        return RunFacts(plan=plan, preflight_ok=self._checked,
                        roots=verified_roots(plan))

    def plan(self) -> Plan:
        """The selected plan (ConfigError, exit 2, for a bad matrix or selector)."""
        if self._plan is None:
            from . import matrix as matrix_mod  # YAML, templates, image definitions: not in a worker
            from .expand import select

            plan = matrix_mod.load(self.matrix_path, prebuilt=self._prebuilt)
            self._plan = select(plan, self._only, self._shard)
        return self._plan

    def preflight(self) -> None:
        """What the plan needs from this machine, checked once before anything runs (exit 3 naming it)."""
        if not self._checked:
            from .doctor import preflight  # an xdist worker is handed the controller's result: no import

            preflight(self.plan(), self.engine_name)
            self._checked = True

    def build(self, cell: Cell) -> BuildResult:
        spec = cell.target.spec
        if spec not in self._builds:
            plan = self.plan()
            if self._sources is None:
                self._sources = ProjectState.of(plan.project, plan.builds)
            job = next(b for b in plan.builds if b.target.spec == spec)
            self._builds[spec] = run_build(job, self._sources)
        return self._builds[spec]

    def engine(self) -> tuple[Engine, RootfsProvider]:
        """The engine and its image roots, started on first use after the same preflight as `xrun run`."""
        if self._engine is None:
            plan = self.plan()
            self.preflight()
            proc.reset()
            eng = make_engine(self.engine_name).__enter__()
            try:
                eng.preflight(plan.cells)
            except BaseException:
                eng.__exit__(None, None, None)
                raise
            self._engine = eng
            self._roots = RootfsProvider(eng.empty_root, plan.image_sources, verified=self._verified_roots)
        assert self._roots is not None
        return self._engine, self._roots

    def run_cell(self, cell: Cell, run: RunSpec) -> tuple[Verdict, Evidence | None]:
        """Build (once) and run one cell; a failed build makes it `not-runnable`, as in `xrun run`."""
        b = self.build(cell)
        if not b.runnable or b.artifact is None:
            return unbuilt_verdict(cell, b), None
        return run_built(cell, b.artifact, self.engine, run)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.__exit__(None, None, None)
            self._engine = None
