"""Per-cell cost of the docker engine (both modes) vs the local engine vs the loop users write.

The same cells (scratch, baseline profile, a Go hello world), in one process, interleaved (the order
rotates every round so drift hits all alike), median of N runs each:
- local:     LocalEngine.run_cell + classify (bwrap + qemu -cpu MODEL);
- container: DockerEngine("container").run_cell + classify (one `docker run --init` per cell);
- pool:      DockerEngine("pool").run_cell + classify (`docker exec` into a warm pooled container);
- loop:      `docker run --rm --platform P IMAGE /app hello` through the docker CLI, the plain loop; on
             the same imported image. Without a binfmt handler for the arch (docker would fail with
             exec format error) the loop starts the bind-mounted qemu itself, as the engine does.
Also the pool's one-off warm-up per (image, arch) and the run stage of all cells at -j2.

Usage: .venv/bin/python bench/bench_docker.py [--repeat N]   (needs a running dockerd)
"""

from __future__ import annotations

import argparse
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
from xarch.engines.docker import DockerEngine, oci_platform  # noqa: E402
from xarch.engines.emulator import qemu_binary  # noqa: E402
from xarch.engines.local import LocalEngine  # noqa: E402
from xarch.pipeline import RootfsProvider, build_all, run_cells  # noqa: E402

TARGETS = ["linux/amd64", "linux/386", "linux/arm/v7", "linux/arm64", "linux/ppc64le", "linux/riscv64"]


def _binfmt_has(goarch: str) -> bool:
    q = platforms.arch(goarch).qemu
    try:
        return "enabled" in Path(f"/proc/sys/fs/binfmt_misc/qemu-{q}").read_text()
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    ns = ap.parse_args()
    proc.disable_core_dumps()
    host = platforms.host_goarch()
    with tempfile.TemporaryDirectory(prefix="xarch-bench-") as d:
        m = Path(d) / "matrix.yaml"
        m.write_text(
            f"name: probe\nproject: {ROOT / 'tests/fixtures/probe'}\n"
            f"build: {{output: \"{d}/{{{{ target | replace('/', '-') }}}}\"}}\n"
            f"targets: [{', '.join(TARGETS)}]\n"
            "run: {args: [hello], timeout: 120, expect: {stdout: \"^probe hello$\"}}\n")
        plan = matrix.load(m)
        builds = build_all(plan, jobs=2)
        cells = [c for c in plan.cells if c.profile.name == "baseline"]
        names = ["local", "container", "pool", "loop"]
        times: dict[tuple[str, str], list[float]] = {}
        loop_how: dict[str, str] = {}
        warmup: list[float] = []
        failures: dict[str, int] = {}
        with LocalEngine() as local, DockerEngine("container") as cont, DockerEngine("pool") as pool:
            cont.preflight(tuple(cells))
            engines = {"local": local, "container": cont, "pool": pool}
            loops = {}
            for cell in cells:
                art = builds[cell.target.spec].artifact
                assert art is not None
                tag = cont.image_for(cell, cont.empty_root)
                arch, variant = oci_platform(cell)
                plat = f"linux/{arch}" + (f"/{variant}" if variant else "")
                argv = ["docker", "run", "--rm", "--platform", plat, "-v", f"{art}:/.xarch/cell/app:ro"]
                for k, val in cell.target.facts.run_env.items():    # qemu-i386 needs it, as in bench_cells
                    argv += ["-e", f"{k}={val}"]
                if cell.target.arch == host or _binfmt_has(cell.target.arch):
                    loops[cell.id] = [*argv, tag, "/app", "hello"]
                    loop_how[cell.id] = "binfmt" if cell.target.arch != host else "native"
                else:
                    loops[cell.id] = [*argv, "--init", "-v", f"{qemu_binary(cell.target.arch)}:/q:ro", tag,
                                      "/q", "-cpu", cell.target.facts.cpu_arg(cell.cpu), "/app", "hello"]
                    loop_how[cell.id] = "qemu -cpu"
                t = time.perf_counter()     # the pool's first cell per (image, arch) starts its container
                ev = pool.run_cell(cell, art, pool.empty_root, plan.run)
                warmup.append(time.perf_counter() - t)
                assert classify(cell, ev, plan.run.expect, plan.run.timeout).ok, (cell.id, ev)
            for i in range(ns.repeat):
                order = names[i % len(names):] + names[:i % len(names)]
                for cell in cells:
                    art = builds[cell.target.spec].artifact
                    assert art is not None
                    for name in order:
                        t = time.perf_counter()
                        if name == "loop":
                            p = subprocess.run(loops[cell.id], capture_output=True, text=True)
                            ok = p.returncode == 0 and p.stdout == "probe hello\n"
                        else:
                            e = engines[name]
                            ev = e.run_cell(cell, art, e.empty_root, plan.run)
                            ok = classify(cell, ev, plan.run.expect, plan.run.timeout).ok
                        if not ok:      # qemu-i386 still crashes Go now and then; count it, keep timing
                            failures[name] = failures.get(name, 0) + 1
                        times.setdefault((name, cell.id), []).append(time.perf_counter() - t)
            walls = {}
            for name in ("local", "container", "pool"):
                e = engines[name]
                t = time.perf_counter()
                res = run_cells(plan, e, builds, 2, RootfsProvider(e.empty_root))
                walls[name] = time.perf_counter() - t
                assert all(r.verdict.ok for r in res), [(r.cell.id, r.verdict) for r in res]

    med = {k: statistics.median(v) for k, v in times.items()}
    out = ["| cell (scratch, baseline) | loop | local ms | container ms | pool ms | loop ms | container/loop "
           "| pool/loop | local/loop |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    tot = dict.fromkeys(names, 0.0)
    for cell in cells:
        row = {n: med[(n, cell.id)] for n in names}
        for n in names:
            tot[n] += row[n]
        out.append(f"| {cell.id} | {loop_how[cell.id]} | {row['local'] * 1000:.0f} | {row['container'] * 1000:.0f} | "
                   f"{row['pool'] * 1000:.0f} | {row['loop'] * 1000:.0f} | {row['container'] / row['loop']:.2f} | "
                   f"{row['pool'] / row['loop']:.2f} | {row['local'] / row['loop']:.2f} |")
    out.append(f"| **all {len(cells)}** | | {tot['local'] * 1000:.0f} | {tot['container'] * 1000:.0f} | "
               f"{tot['pool'] * 1000:.0f} | {tot['loop'] * 1000:.0f} | **{tot['container'] / tot['loop']:.2f}** | "
               f"**{tot['pool'] / tot['loop']:.2f}** | **{tot['local'] / tot['loop']:.2f}** |")
    out.append("")
    out.append(f"- pool warm-up (first cell per image and arch, container start included): median "
               f"{statistics.median(warmup) * 1000:.0f} ms")
    out.append(f"- run stage, {len(cells)} cells at -j2: local {walls['local']:.2f} s, container "
               f"{walls['container']:.2f} s, pool {walls['pool']:.2f} s (warm)")
    if failures:
        out.append(f"- runs that did not print the expected output (counted in the timings): {failures}")
    out.append(f"- host {host}, median of {ns.repeat} interleaved runs per cell and runner")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
