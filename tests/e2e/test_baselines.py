"""Each baseline CPU model runs a Go binary of its level and rejects the next level up (real qemu)."""

from __future__ import annotations

from pathlib import Path

import pytest

from xarch import matrix, platforms
from xarch.classify import classify
from xarch.engines.local import LocalEngine
from xarch.pipeline import build_all
from xarch.plan import Cell, Profile, RunSpec, Target

pytestmark = pytest.mark.e2e

# (arch, level) whose baseline model must run it; the next level up must be refused by that model.
# arm64 v8.1: qemu 7.2 has no model that runs v8.1 but refuses v8.2 (neoverse-n1 runs both).
LEVELS = [("amd64", "v1"), ("amd64", "v2"), ("amd64", "v3"), ("386", "softfloat"), ("386", "sse2"),
          ("arm", "v5"), ("arm", "v6"), ("arm", "v7"), ("arm64", "v8.0"), ("arm64", "v8.2"),
          ("ppc64le", "power8"), ("ppc64le", "power9"), ("ppc64le", "power10"),
          ("riscv64", "rva20u64"), ("riscv64", "rva22u64"), ("mips64le", "softfloat"),
          ("mips64le", "hardfloat"), ("s390x", None)]


def _spec(arch: str, level: str | None) -> str:
    return f"linux/{arch}" + (f"/{level}" if level else "")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, probe_src) -> dict[str, Path]:
    specs = sorted({_spec(a, lv) for a, lv in LEVELS}
                   | {_spec(a, platforms.next_level(platforms.arch(a), lv)) for a, lv in LEVELS
                      if lv and platforms.next_level(platforms.arch(a), lv)})
    d = tmp_path_factory.mktemp("baselines")
    m = d / "matrix.yaml"
    m.write_text(f"name: probe\nproject: {probe_src}\nbuild:\n  output: \"{d}/{{{{ target | replace('/', '-') }}}}\"\n"
                 f"targets: [{', '.join(specs)}]\nrun: {{args: [hello]}}\n")
    plan = matrix.load(m)
    builds = build_all(plan, jobs=2)
    assert all(b.verdict == "ok" for b in builds.values()), {k: b.explanation for k, b in builds.items()}
    return {k: b.artifact for k, b in builds.items() if b.artifact}


@pytest.fixture(scope="module")
def engine():
    with LocalEngine() as e:
        yield e


def _run(engine, artifacts, spec: str, model: str):
    os_, arch, *rest = spec.split("/")
    t = Target(spec, os_, arch, rest[0] if rest else None)
    c = Cell(t, "scratch", Profile("baseline", builtin=True), model, ("hello",), {})
    run = RunSpec(("hello",), timeout=120)
    ev = engine.run_cell(c, artifacts[spec], engine.empty_root, run)
    return classify(c, ev, run.expect, run.timeout), ev


@pytest.mark.parametrize(("arch", "level"), LEVELS, ids=[f"{a}-{lv}" for a, lv in LEVELS])
def test_baseline_runs_its_level_and_rejects_the_next(engine, artifacts, arch, level):
    a = platforms.arch(arch)
    model = a.baseline_model(level)
    assert model is not None
    v, ev = _run(engine, artifacts, _spec(arch, level), model)
    assert v.verdict == "ok", (v, ev.stderr)
    nxt = platforms.next_level(a, level)
    if nxt is None or (arch, level) == ("arm64", "v8.2"):
        return
    v, ev = _run(engine, artifacts, _spec(arch, nxt), model)
    assert v.verdict == "unsupported-cpu", (v, ev.stderr, ev.exit_code, ev.signal)
    assert model.split(",")[0] in v.explanation
    assert f"{arch}/{level}" in v.fix
