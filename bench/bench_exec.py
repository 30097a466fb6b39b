"""What `go test -exec 'xrun exec'` costs per test binary (issue 17), as ratios against bare qemu.

1. per test binary: `xrun exec --profile P BINARY -test.run=.` and the compiled launcher
   (`xrun exec --launcher --profile P`) vs `qemu-<arch>-static -cpu MODEL BINARY -test.run=.` on the
   same compiled test binaries of a real multi-package module (the tests/fixtures module gotestenv, and
   gotest), interleaved, median of N runs each;
2. a whole `go test -count=1 ./...` with `-exec 'xrun exec'` and with the launcher vs
   `-exec 'qemu-<arch>-static -cpu MODEL'`.

Both go through the same kernel, files and CPU model; the difference is xrun's start-up, the sandbox
(bwrap, seccomp, the private binfmt_misc) and its view of the package (a scratch copy).

Usage: .venv/bin/python bench/bench_exec.py [--repeat N] [--markdown]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xarch.engines.emulator import qemu_binary  # noqa: E402
from xarch.plan import builtin_profile  # noqa: E402
from xarch.toolchain import go_bin_dir  # noqa: E402

ARCH, PROFILE = "arm64", "pi4"
MODULES = [ROOT / "tests/fixtures/gotestenv", ROOT / "tests/fixtures/gotest"]


def _xrun() -> list[str]:
    exe = Path(sys.executable).with_name("xrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-P", "-m", "xarch"]


def _timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    t = time.perf_counter()
    # a real suite may have a test failing under both (xxhash's plugin test): time it all the same
    subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--module", action="append", default=[], type=Path,
                    help="also a real suite's module (a checkout of cespare/xxhash, say; stdlib-only tests)")
    ap.add_argument("--run", default=".", help="the -test.run pattern of the per-binary figure (default: all)")
    ns = ap.parse_args()
    go = str(Path(go_bin_dir()) / "go")
    model = builtin_profile(PROFILE).cpu[ARCH]
    qemu = qemu_binary(ARCH)
    env = {**os.environ, "GOOS": "linux", "GOARCH": ARCH, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local",
           "GOPROXY": "off", "GOFLAGS": ""}
    rows = []
    launcher = subprocess.run([*_xrun(), "exec", "--launcher", "--profile", PROFILE], check=True, text=True,
                              capture_output=True).stdout.split()
    with tempfile.TemporaryDirectory(prefix="xarch-bench-exec-") as d:
        binaries: list[tuple[str, Path, Path]] = []
        for mod in [*MODULES, *(m.resolve() for m in ns.module)]:
            copy = Path(d) / mod.name
            shutil.copytree(mod, copy, ignore=shutil.ignore_patterns(".git"))
            listed = subprocess.run([go, "list", "-f", "{{.ImportPath}} {{.Dir}}", "./..."], cwd=copy, env=env,
                                    check=True, text=True, capture_output=True).stdout.splitlines()
            for line in listed:
                pkg, where = line.split(" ", 1)
                pdir = Path(where)
                out = Path(d) / f"{pkg.replace('/', '_')}.test"
                subprocess.run([go, "test", "-c", "-o", str(out), "."], cwd=pdir, env=env, capture_output=True)
                if out.exists():
                    binaries.append((pkg, pdir, out))
        for pkg, pdir, binary in binaries:
            bare = [qemu, "-cpu", model, str(binary), f"-test.run={ns.run}"]
            wrapped = [*_xrun(), "exec", "--profile", PROFILE, str(binary), f"-test.run={ns.run}"]
            fast = [*launcher, str(binary), f"-test.run={ns.run}"]
            _timed(wrapped, pdir, env)       # warm the image and tagged-copy caches, make the plan
            a, b, c = [], [], []
            for _ in range(ns.repeat):       # interleaved, so drift hits all alike
                a.append(_timed(bare, pdir, env))
                b.append(_timed(wrapped, pdir, env))
                c.append(_timed(fast, pdir, env))
            rows.append((pkg, statistics.median(a), statistics.median(b), statistics.median(c)))
        whole = []
        for mod in [*MODULES, *ns.module]:
            copy = Path(d) / mod.name
            t_bare = _timed([go, "test", "-count=1", "-exec", f"{qemu} -cpu {model}", "./..."], copy, env)
            t_x = _timed([go, "test", "-count=1", "-exec", " ".join([*_xrun(), "exec", "--profile", PROFILE]),
                          "./..."], copy, env)
            t_l = _timed([go, "test", "-count=1", "-exec", " ".join(launcher), "./..."], copy, env)
            whole.append((mod.name, t_bare, t_x, t_l))
    if ns.markdown:
        print(f"| test binary ({ARCH}, {PROFILE} = -cpu {model}) | bare qemu | xrun exec | ratio | launcher | ratio |"
              "\n|---|---|---|---|---|---|")
        for pkg, a, b, c in rows:
            print(f"| {pkg} | {a * 1000:.0f} ms | {b * 1000:.0f} ms | {b / a:.2f}x | {c * 1000:.0f} ms | {c / a:.2f}x |")
        print("\n| `go test -count=1 ./...` | -exec qemu | -exec 'xrun exec' | ratio | launcher | ratio |"
              "\n|---|---|---|---|---|---|")
        for name, a, b, c in whole:
            print(f"| {name} | {a:.2f} s | {b:.2f} s | {b / a:.2f}x | {c:.2f} s | {c / a:.2f}x |")
    else:
        for pkg, a, b, c in rows:
            print(f"{pkg}: bare {a * 1000:.0f} ms, xrun exec {b * 1000:.0f} ms ({b / a:.2f}x), "
                  f"launcher {c * 1000:.0f} ms ({c / a:.2f}x)")
        for name, a, b, c in whole:
            print(f"go test ./... in {name}: -exec qemu {a:.2f} s, -exec 'xrun exec' {b:.2f} s ({b / a:.2f}x), "
                  f"launcher {c:.2f} s ({c / a:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
