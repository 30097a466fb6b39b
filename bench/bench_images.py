"""Image store cost: a cold build of one image for one arch (in a fresh cache) and a warm lookup.

Usage: .venv/bin/python bench/bench_images.py [--image alpine] [--arch arm64] [--repeat 200]
The cold figure includes apt's package-list update for that arch and the downloads from the mirror
configured on this host, so it varies with the mirror; the warm one is what every run pays.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from xarch.rootfs.store import ImageStore  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image", default="alpine")
    ap.add_argument("--arch", default="arm64")
    ap.add_argument("--repeat", type=int, default=200)
    ns = ap.parse_args()
    rows = []
    for image in (ns.image, "distroless-cc"):
        with tempfile.TemporaryDirectory(prefix="xarch-bench-img-") as d:
            store = ImageStore(Path(d))
            t = time.perf_counter()
            store.ensure(image, ns.arch)
            cold = time.perf_counter() - t
            warm = []
            for _ in range(ns.repeat):
                t = time.perf_counter()
                store.ensure(image, ns.arch)
                warm.append(time.perf_counter() - t)
            rows.append((image, cold, statistics.median(warm), max(warm)))
    print(f"| image ({ns.arch}) | cold build s | warm lookup ms (median) | warm max ms |")
    print("|---|---:|---:|---:|")
    for image, cold, med, mx in rows:
        print(f"| {image} | {cold:.1f} | {med * 1000:.2f} | {mx * 1000:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
