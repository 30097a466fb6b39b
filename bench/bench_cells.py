"""Per-cell cost of xrun against the raw baseline, measured in one process, as ratios.

1. per cell: xrun's local engine (bwrap sandbox + qemu -cpu MODEL + classification) vs a bare
   `qemu-<arch>-static -cpu MODEL BINARY` on the same binary, interleaved, median of N runs each;
2. -j2 vs -j1 over 20+ cells (wall time of the whole run stage);
3. a warm re-run of an unchanged matrix, and one after edits go build never reads (README.md, a
   comment in matrix.yaml, both inside the project): how many builds execute, and the time against
   the cold build.

Usage: .venv/bin/python bench/bench_cells.py [--repeat N] [--markdown]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xarch import matrix, platforms, proc  # noqa: E402
from xarch.classify import classify  # noqa: E402
from xarch.engines.emulator import qemu_binary  # noqa: E402
from xarch.engines.local import LocalEngine  # noqa: E402
from xarch.pipeline import RootfsProvider, build_all, run_cells  # noqa: E402

TARGETS = ["linux/amd64", "linux/amd64/v2", "linux/amd64/v3", "linux/386", "linux/arm/v5", "linux/arm/v6",
           "linux/arm/v7", "linux/arm64", "linux/ppc64le", "linux/s390x", "linux/riscv64", "linux/mips64le"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--markdown", action="store_true")
    ns = ap.parse_args()
    proc.disable_core_dumps()
    with tempfile.TemporaryDirectory(prefix="xarch-bench-") as d:
        proj = Path(d) / "probe"       # the matrix and a README inside the project, as in a user's repo
        shutil.copytree(ROOT / "tests/fixtures/probe", proj)
        (proj / "README.md").write_text("# probe\n")
        m = proj / "matrix.yaml"
        m.write_text(
            f"name: probe\nbuild: {{output: \"dist/{{{{ target | replace('/', '-') }}}}\"}}\n"
            f"targets: [{', '.join(TARGETS)}]\nprofiles: [baseline, pi-zero, pi2, x86-64-v2-vm]\n"
            "run: {args: [hello]}\n# the bench's matrix\n")
        plan = matrix.load(m)
        t0 = time.monotonic()
        builds = build_all(plan, jobs=2)
        cold = time.monotonic() - t0
        t0 = time.monotonic()
        warm = build_all(plan, jobs=2)
        warm_s = time.monotonic() - t0
        executed = sum(1 for b in warm.values() if not b.cached)
        (proj / "README.md").write_text("# probe\n\nEdited.\n")
        m.write_text(m.read_text().replace("# the bench's matrix", "# the bench's matrix, edited"))
        t0 = time.monotonic()
        edited = build_all(matrix.load(m), jobs=2)
        edited_s = time.monotonic() - t0
        edited_executed = sum(1 for b in edited.values() if not b.cached)

        rows = []
        with LocalEngine() as engine:
            for cell in plan.cells:
                if cell.profile.name != "baseline":
                    continue
                art = builds[cell.target.spec].artifact
                assert art is not None
                q = qemu_binary(cell.target.arch)
                bare_argv = [q, "-cpu", cell.target.facts.cpu_arg(cell.cpu), str(art), "hello"]
                env = dict(cell.target.facts.run_env)
                bare, ours = [], []
                for _ in range(ns.repeat):          # interleaved, so drift hits both alike
                    t = time.perf_counter()
                    subprocess.run(bare_argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   check=True)
                    bare.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    ev = engine.run_cell(cell, art, engine.empty_root, plan.run)
                    v = classify(cell, ev, plan.run.expect, plan.run.timeout)
                    ours.append(time.perf_counter() - t)
                    assert v.ok, (cell.id, v)
                rows.append((cell.id, statistics.median(bare), statistics.median(ours)))

            cells = plan.cells
            roots = RootfsProvider(engine.empty_root)
            walls: dict[int, list[float]] = {}
            verdicts = None
            for j in (1, 2, 1, 2):
                t = time.perf_counter()
                res = run_cells(plan, engine, builds, j, roots)
                walls.setdefault(j, []).append(time.perf_counter() - t)
                got = [(r.cell.id, r.verdict.verdict) for r in res]
                assert verdicts is None or got == verdicts, "verdicts differ between -j1 and -j2"
                verdicts = got

    total_bare = sum(r[1] for r in rows)
    total_ours = sum(r[2] for r in rows)
    j1, j2 = min(walls[1]), min(walls[2])
    host = platforms.host_goarch()
    out = []
    out.append("| cell (scratch, baseline) | bare qemu ms | xrun ms | ratio |")
    out.append("|---|---:|---:|---:|")
    for cid, b, o in rows:
        out.append(f"| {cid} | {b * 1000:.1f} | {o * 1000:.1f} | {o / b:.2f} |")
    out.append(f"| **all {len(rows)} cells** | {total_bare * 1000:.0f} | {total_ours * 1000:.0f} | "
               f"**{total_ours / total_bare:.2f}** |")
    out.append("")
    n_ok = sum(1 for _, v in verdicts or [] if v == "ok")
    out.append(f"- run stage, {len(cells)} cells ({n_ok} ok, the rest the expected unsupported-cpu): -j1 {j1:.2f} s, -j2 {j2:.2f} s: **{j1 / j2:.2f}x** faster")
    out.append(f"- builds: cold {cold:.1f} s for {len(builds)} targets (Go build cache as found); warm re-run "
               f"{warm_s * 1000:.0f} ms, **{executed} builds executed**; after editing README.md and a "
               f"matrix comment {edited_s * 1000:.0f} ms (load included), **{edited_executed} builds executed**, "
               f"**{cold / edited_s:.0f}x** faster than the cold build")
    out.append(f"- host {host}, median of {ns.repeat} interleaved runs per cell")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
