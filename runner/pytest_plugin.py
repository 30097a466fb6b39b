"""`pytest --xarch`: every matrix cell as a pytest item, plus the `xarch_cell` fixture.

Thin by design, as pytest-xdist's plugin is: at start-up this module imports only pytest and the
standard library, because pytest loads it in every project of the environment (`--xarch` or not).
The machinery (`session.Session`: the same plan, selection, preflight, builds and verdicts as `xrun
run`) is imported inside the hooks, only when --xarch is given or a test asks for `xarch_cell`.
Under pytest-xdist each worker has its own session; builds and images are shared through the
on-disk caches and their file locks, so each artifact and each image is built once. What each worker
would check again (the plan, the preflight, the cached images) the controller checks
once and hands over (`session.RunFacts`), so a worker's set-up costs little more than its engine.

The matrix's `xfail` applies to a cell's item and to a `@pytest.mark.xarch` test on that cell alike:
strict, and met only by the verdict it names (a test that fails without a run giving it fails).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .build import BuildResult
    from .model import Evidence, Verdict
    from .plan import Cell, Plan, RunSpec
    from .session import Session

_KEY = pytest.StashKey["XarchSession"]()
_FACTS = "xarch_run_facts"      # the key of session.RunFacts (pickled) in an xdist worker's workerinput


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("xarch", "xarch: run a cross-build matrix as tests")
    g.addoption("--xarch", nargs="?", const="", default=None, metavar="MATRIX",
                help="collect every cell of MATRIX (default: matrix.yaml in the rootdir) as a test; "
                     "write --xarch=PATH when positional arguments follow")
    g.addoption("--xarch-engine", default="local", choices=("local", "docker"), help="engine for cells")
    g.addoption("--xarch-only", action="append", default=[], metavar="KEY=GLOB",
                help="keep cells whose target/image/profile matches (repeatable)")
    parser.addini("xarch_matrix", "default matrix for --xarch and the xarch_cell fixture", default="matrix.yaml")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "xarch(targets=None, images=None, profiles=None): run this test once "
                                       "per matching matrix cell through the xarch_cell fixture")
    opt = config.getoption("--xarch")
    sess = XarchSession(config, _matrix_path(config, opt), enabled=opt is not None)
    config.stash[_KEY] = sess
    if opt is not None:
        sess.plan()     # a bad matrix is a usage error now, not a collection crash later
        m = str(sess.matrix_path)
        if not any(str(Path(a.split("::")[0]).resolve()) == m for a in config.args):
            config.args.append(m)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist's controller, once per worker: hand over what it checked once for the whole run."""
    sess = node.config.stash.get(_KEY, None)
    if sess is not None and sess.enabled:
        facts = sess.facts_for_workers()
        if facts is not None:
            node.workerinput[_FACTS] = facts


def pytest_unconfigure(config: pytest.Config) -> None:
    sess = config.stash.get(_KEY, None)
    if sess is not None:
        sess.close()


def _matrix_path(config: pytest.Config, opt: str | None) -> Path:
    raw = opt or str(config.getini("xarch_matrix"))
    p = Path(raw)
    return (p if p.is_absolute() else Path(config.rootpath) / p).resolve()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    sess = parent.config.stash.get(_KEY, None)
    if sess is not None and sess.enabled and file_path.resolve() == sess.matrix_path:
        return MatrixFile.from_parent(parent, path=file_path)
    return None


class CellFailed(Exception):
    """A cell's verdict was not what the matrix expects."""

    def __init__(self, cell: Cell, verdict: Verdict, ev: Evidence | None) -> None:
        super().__init__(verdict.verdict)
        self.cell, self.verdict, self.ev = cell, verdict, ev


class MatrixXfail(CellFailed):
    """A cell gave the verdict the matrix's xfail names: the one failure its xfail mark accepts."""


class XfailMismatch(CellFailed):
    """An xfail cell failed, but with another verdict than the one the matrix names."""


def _xfail_marks(cell: Cell) -> tuple[pytest.MarkDecorator, ...]:
    """The matrix's xfail as pytest's: strict (an unexpected pass fails), and met only by its verdict."""
    if not cell.xfail:
        return ()
    return (pytest.mark.xfail(strict=True, raises=MatrixXfail, reason=f"matrix xfail: {cell.xfail}"),)


class MatrixFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        sess = self.config.stash[_KEY]
        for cell in sess.plan().cells:
            item = CellItem.from_parent(self, name=cell.id, cell=cell)
            for mark in _xfail_marks(cell):
                item.add_marker(mark)
            yield item


class CellItem(pytest.Item):
    def __init__(self, *, cell: Cell, **kw: Any) -> None:
        super().__init__(**kw)
        self.cell = cell

    def runtest(self) -> None:
        sess = self.config.stash[_KEY]
        verdict, ev = sess.run_cell(self.cell, sess.plan().run)
        if self.cell.xfail:
            if verdict.verdict == self.cell.xfail:
                raise MatrixXfail(self.cell, verdict, ev)       # the expected failure -> xfailed
            if not verdict.ok:
                raise XfailMismatch(self.cell, verdict, ev)
            return                                              # ok -> strict XPASS -> failed
        if not verdict.ok:
            raise CellFailed(self.cell, verdict, ev)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        e = excinfo.value
        if isinstance(e, CellFailed):
            return _describe(e)
        from .errors import InfraError
        from .output.text import plain

        if isinstance(e, InfraError):
            return plain(f"infra-error: {e.what}\n  fix: {e.fix}")
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        sess = self.config.stash[_KEY]
        line = sess.plan().target_lines.get(self.cell.target.spec)
        return self.path, (line - 1) if line else None, f"xarch cell {self.cell.id}"


def _describe(e: CellFailed) -> str:
    from .output.text import plain

    v, ev = e.verdict, e.ev
    head = f"{e.cell.id}: {v.verdict}"
    if isinstance(e, XfailMismatch):
        head += f" (the matrix expects {e.cell.xfail})"
    lines = [head]
    if v.explanation:
        lines.append(f"  {v.explanation}")
    if v.fix:
        lines.append(f"  fix: {v.fix}")
    if ev is not None:
        lines.append(f"  cpu: {ev.cpu}; started as: {ev.path}")
        for name, text in (("stdout", ev.stdout), ("stderr", ev.stderr)):
            if text.strip():
                tail = "\n".join(text.strip().splitlines()[-15:])
                lines.append(f"  --- {name} (tail) ---\n" + "\n".join("  " + ln for ln in tail.splitlines()))
    return plain("\n".join(lines))


@dataclass
class CellRun:
    """What one run of a cell's binary did: the fixture's return value."""

    stdout: str
    stderr: str
    exit_code: int | None
    signal: int | None
    verdict: str
    explanation: str | None
    fix: str | None


class CellHandle:
    """The `xarch_cell` fixture: one matrix cell, with its built artifact, runnable with your args."""

    def __init__(self, sess: XarchSession, cell: Cell) -> None:
        self._sess = sess
        self.cell = cell
        self.id = cell.id
        self.xfail_met: tuple[Verdict, Evidence | None] | None = None  # a run gave the matrix's xfail verdict

    @property
    def artifact(self) -> Path:
        from .output.text import plain

        b = self._sess.build(self.cell)
        if b.artifact is None:
            pytest.fail(plain(f"{self.cell.target.spec}: {b.verdict}: {b.explanation}"), pytrace=False)
        return b.artifact

    def run(self, args: Sequence[str] = (), *, stdin: str | bytes | None = None, env: dict[str, str] | None = None,
            timeout: float | None = None, expect_exit: int = 0, expect_stdout: str | None = None) -> CellRun:
        from .plan import Cell, Expect, RunSpec

        plan_run = self._sess.plan().run
        spec = RunSpec(tuple(args), {**plan_run.env, **(env or {})}, stdin,
                       timeout if timeout is not None else plan_run.timeout,
                       Expect(expect_exit, expect_stdout))
        cell = Cell(self.cell.target, self.cell.image, self.cell.profile, self.cell.cpu, tuple(args),
                    dict(self.cell.env))
        v, ev = self._sess.run_cell(cell, spec)
        if self.cell.xfail and v.verdict == self.cell.xfail and self.xfail_met is None:
            self.xfail_met = (v, ev)
        return CellRun(ev.stdout if ev else "", ev.stderr if ev else "", ev.exit_code if ev else None,
                       ev.signal if ev else None, v.verdict, v.explanation, v.fix)


class XarchSession:
    """The plugin's view of one `session.Session`, made on first use (never without --xarch or the fixture)."""

    def __init__(self, config: pytest.Config, matrix_path: Path, enabled: bool) -> None:
        self.config = config
        self.matrix_path = matrix_path
        self.enabled = enabled
        self._core: Session | None = None
        self._facts: bytes | None = None

    def core(self) -> Session:
        if self._core is None:
            from .session import Session

            facts = getattr(self.config, "workerinput", {}).get(_FACTS)
            if facts is not None:       # an xdist worker: the controller checked the run once
                import pickle

                self._core = Session.from_facts(pickle.loads(facts), self.matrix_path,
                                                self.config.getoption("--xarch-engine"))
                return self._core
            from .errors import ConfigError
            from .expand import parse_only

            try:
                only = [parse_only(s) for s in self.config.getoption("--xarch-only")]
            except ConfigError as e:
                raise pytest.UsageError(f"xarch: {e}") from None
            self._core = Session(self.matrix_path, only, self.config.getoption("--xarch-engine"))
        return self._core

    def plan(self) -> Plan:
        from .errors import ConfigError

        try:
            return self.core().plan()
        except ConfigError as e:
            raise pytest.UsageError(f"xarch: {e}") from None

    def build(self, cell: Cell) -> BuildResult:
        return self.core().build(cell)

    def facts_for_workers(self) -> bytes | None:
        """session.RunFacts, pickled for xdist's workerinput (made once); None when checking failed here:
        then each worker checks for itself and reports what failed on its cells, as without xdist."""
        if self._facts is None:
            import pickle

            from .errors import XarchError

            try:
                self._facts = pickle.dumps(self.core().facts())
            except (XarchError, OSError):
                self._facts = b""
        return self._facts or None

    def run_cell(self, cell: Cell, run: RunSpec) -> tuple[Verdict, Evidence | None]:
        return self.core().run_cell(cell, run)

    def close(self) -> None:
        if self._core is not None:
            self._core.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "xarch_cell" not in metafunc.fixturenames:
        return
    sess: XarchSession = metafunc.config.stash[_KEY]
    if not sess.matrix_path.is_file():
        metafunc.parametrize("xarch_cell", [pytest.param(None, marks=pytest.mark.skip(
            reason=f"xarch: no matrix at {sess.matrix_path} (pass --xarch=PATH)"))], indirect=True)
        return
    mark = metafunc.definition.get_closest_marker("xarch")
    sel: dict[str, Any] = dict(mark.kwargs) if mark else {}
    cells = [c for c in sess.plan().cells if c.target.runnable and _selected(c, sel)]
    if not cells:
        metafunc.parametrize("xarch_cell", [pytest.param(None, marks=pytest.mark.skip(
            reason=f"xarch: no cell matches {sel}"))], indirect=True)
        return
    metafunc.parametrize("xarch_cell", [pytest.param(c.id, id=c.id, marks=_xfail_marks(c)) for c in cells],
                         indirect=True)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, object, object]:
    """A test on an xfail cell that failed after a run gave the matrix's verdict met the xfail, as a cell does."""
    try:
        return (yield)
    except (Exception, pytest.fail.Exception) as e:
        handle = pyfuncitem.funcargs.get("xarch_cell")
        if isinstance(handle, CellHandle) and handle.xfail_met is not None:
            raise MatrixXfail(handle.cell, *handle.xfail_met) from e
        raise


def _selected(c: Cell, sel: dict[str, Any]) -> bool:
    from .expand import glob_match  # the one glob rule of --only and the matrix

    vals = {"targets": c.target.spec, "images": c.image, "profiles": c.profile.name}
    for key, pats in sel.items():
        if key not in vals:
            raise pytest.UsageError(f"@pytest.mark.xarch: unknown key {key!r} (targets, images, profiles)")
        pats = [pats] if isinstance(pats, str) else list(pats or [])
        if pats and not any(glob_match(key, vals[key], p) for p in pats):
            return False
    return True


@pytest.fixture
def xarch_cell(request: pytest.FixtureRequest) -> CellHandle:
    """One matrix cell (parametrised over the cells the test's xarch marker selects)."""
    sess: XarchSession = request.config.stash[_KEY]
    cid = request.param
    cell = next(c for c in sess.plan().cells if c.id == cid)
    return CellHandle(sess, cell)
