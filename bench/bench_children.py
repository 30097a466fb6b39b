"""What running a cell's children under its emulator costs (issue 14), in one process, as ratios.

1. per cell: the local engine with private binfmt_misc handlers (an outer `unshare` that mounts
   binfmt_misc and registers the cell's handlers, then bwrap) vs the same engine without them
   (XARCH_CHILDREN=host), on a program that starts no child; interleaved, median of N runs each;
2. per exec: a cell that execs `/bin/busybox true` 20 times vs 0 times, per exec, against a bare
   `qemu-<arch>-static -cpu MODEL <image>/bin/busybox true` (the least an emulated exec can cost).

Usage: .venv/bin/python bench/bench_children.py [--repeat N] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xarch import matrix, proc  # noqa: E402
from xarch.engines.emulator import qemu_binary  # noqa: E402
from xarch.engines.local import LocalEngine  # noqa: E402
from xarch.pipeline import RootfsProvider, build_all  # noqa: E402

TARGETS = ["linux/arm64", "linux/amd64"]
SPAWNS = 20


def _once(fn, *args, **kw) -> float:
    t = time.perf_counter()
    fn(*args, **kw)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--markdown", action="store_true")
    ns = ap.parse_args()
    proc.disable_core_dumps()
    rows, spawn_rows = [], []
    with tempfile.TemporaryDirectory(prefix="xarch-bench-") as d:
        m = Path(d) / "matrix.yaml"
        m.write_text(f"name: children\nproject: {ROOT / 'tests/fixtures/children'}\n"
                     f"build: {{output: \"{d}/{{{{ target | replace('/', '-') }}}}\"}}\n"
                     f"targets: [{', '.join(TARGETS)}]\nimages: [alpine]\nprofiles: [baseline]\n"
                     "run: {args: [spawn, '0'], expect: {stdout: '^spawned'}}\n")
        plan = matrix.load(m)
        builds = build_all(plan, jobs=2)
        with LocalEngine() as private, LocalEngine() as hostonly:
            roots = RootfsProvider(private.empty_root)
            for cell in plan.cells:
                art = builds[cell.target.spec].artifact
                assert art is not None
                root = roots.get(cell)
                run0 = plan.run
                spawning = replace(cell, args=("spawn", str(SPAWNS)))
                os.environ["XARCH_CHILDREN"] = "host"
                ev = hostonly.run_cell(cell, art, root, run0)      # plans its children with the host's handlers
                del os.environ["XARCH_CHILDREN"]
                assert ev.children and not ev.children.startswith("private"), ev.children
                ev = private.run_cell(cell, art, root, run0)
                assert ev.children and ev.children.startswith("private"), ev.children
                with_, without = [], []
                for _ in range(ns.repeat):                 # interleaved, so drift hits both alike
                    with_.append(_once(private.run_cell, cell, art, root, run0))
                    without.append(_once(hostonly.run_cell, cell, art, root, run0))
                rows.append((cell.id, statistics.median(without), statistics.median(with_)))

                q = qemu_binary(cell.target.arch)
                bare_argv = [q, "-cpu", cell.target.facts.cpu_arg(cell.cpu), str(root / "bin" / "busybox"), "true"]
                bare = [_once(subprocess.run, bare_argv, check=True, env={"QEMU_LD_PREFIX": str(root)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(ns.repeat)]
                zero, many = [], []
                for _ in range(ns.repeat):
                    zero.append(_once(private.run_cell, cell, art, root, run0))
                    t = time.perf_counter()
                    ev = private.run_cell(spawning, art, root, run0)
                    many.append(time.perf_counter() - t)
                    assert ev.exit_code == 0 and f"spawned {SPAWNS}" in ev.stdout, (ev.stdout, ev.stderr)
                per = (statistics.median(many) - statistics.median(zero)) / SPAWNS
                spawn_rows.append((cell.id, statistics.median(bare), per))

    out = ["| cell (alpine, baseline, no child) | without private handlers ms | with ms | ratio |",
           "|---|---:|---:|---:|"]
    for cid, wo, w in rows:
        out.append(f"| {cid} | {wo * 1000:.1f} | {w * 1000:.1f} | {w / wo:.2f} |")
    out += ["", "| one exec of busybox true in a cell | bare qemu ms | in the cell ms | ratio |", "|---|---:|---:|---:|"]
    for cid, b, p in spawn_rows:
        out.append(f"| {cid} | {b * 1000:.1f} | {p * 1000:.1f} | {p / b:.2f} |")
    out.append(f"\n- median of {ns.repeat} interleaved runs; per exec = (cell with {SPAWNS} execs - cell with 0) / {SPAWNS}")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
