"""A warm `xrun matrix.yaml -j2`, the whole process, against the bare qemu loop over its cells.

What a user compares: the example matrix (README's first command) on a warm cache, start to exit
(Python start-up, the plan, the build check of every target, the image lookups, the cells with their
sandbox and verdicts, the console grid and the reports), against a shell loop of
`qemu-<arch>-static -cpu MODEL ARTIFACT ARGS` over the same cells, one after another. Interleaved,
median of N runs each; xrun's output goes to /dev/null as it would to a CI log.

Usage: .venv/bin/python bench/bench_matrix.py [--repeat N] [--jobs J] [MATRIX]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xarch import matrix  # noqa: E402
from xarch.engines.emulator import qemu_binary  # noqa: E402
from xarch.pipeline import build_all  # noqa: E402


def _xrun() -> list[str]:
    exe = Path(sys.executable).with_name("xrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-P", "-m", "xarch"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("matrix", nargs="?", default=str(ROOT / "matrix.yaml"))
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2)
    ns = ap.parse_args()
    path = Path(ns.matrix).resolve()
    plan = matrix.load(path)
    builds = build_all(plan, jobs=2)        # warms the build cache as xrun's own first run would
    loop = []
    for cell in plan.cells:
        art = builds[cell.target.spec].artifact
        if art is None or not cell.target.runnable or not cell.cpu:
            continue
        q = qemu_binary(cell.target.arch)
        loop.append(([q, "-cpu", cell.target.facts.cpu_arg(cell.cpu), str(art), *plan.run.args],
                     {**os.environ, **cell.target.facts.run_env}))
    with tempfile.TemporaryDirectory(prefix="xarch-bench-matrix-") as d:
        ours = [*_xrun(), str(path), "-j", str(ns.jobs), "--json", f"{d}/report.json"]
        subprocess.run(ours, cwd=path.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)   # warm
        a, b = [], []
        for _ in range(ns.repeat):      # interleaved, so drift hits both alike
            t = time.perf_counter()
            for argv, env in loop:
                subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            b.append(time.perf_counter() - t)
            t = time.perf_counter()
            r = subprocess.run(ours, cwd=path.parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            a.append(time.perf_counter() - t)
            assert r.returncode in (0, 1), r.returncode
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"| {path.name}: {len(plan.cells)} cells, {len(builds)} targets | bare qemu loop {mb:.2f} s | "
          f"xrun -j{ns.jobs} {ma:.2f} s | **{ma / mb:.2f}x** |")
    print(f"(median of {ns.repeat} interleaved runs; pairwise ratios {min(x / y for x, y in zip(a, b, strict=False)):.2f}-"
          f"{max(x / y for x, y in zip(a, b, strict=False)):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
