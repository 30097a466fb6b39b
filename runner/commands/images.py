"""`xrun images list|build|path|verify|prune`: the runtime images and their cache."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError, InfraError
from ..output.text import human_size, safe
from . import Subparsers, out_console


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    im: argparse.ArgumentParser = sub.add_parser("images", help="the runtime images: list, build, path, verify, prune")
    isub = im.add_subparsers(dest="images_cmd")
    isub.add_parser("list", help="the definitions and what is cached (size, fidelity)")
    ib = isub.add_parser("build", help="build an image's root filesystem for one or all arches")
    ib.add_argument("name")
    ib.add_argument("--arch", action="append", default=[],
                    help="Debian arch (arm64, armel, ...) or GOARCH[/variant] (arm/v6); default: all")
    ib.add_argument("--refresh", action="store_true", help="update the package lists first")
    ip = isub.add_parser("path", help="print the cached root directory of an image for an arch")
    ip.add_argument("name")
    ip.add_argument("arch")
    iv = isub.add_parser("verify", help="check cached images file by file against their manifests; "
                         "a modified one is removed, so the next run rebuilds it (exit 1)")
    iv.add_argument("name", nargs="?")
    ipr = isub.add_parser("prune", help="remove stale entries (--all: everything)")
    ipr.add_argument("--all", action="store_true")
    im.set_defaults(run=run)
    return im


def _debian_arch(a: str) -> str:
    """Accept a Debian arch (armel) or a GOARCH[/variant] (arm/v6) and return the Debian arch."""
    from .. import platforms, rootfs

    if a in rootfs.DEBIAN_ARCHES:
        return a
    goarch, _, variant = a.partition("/")
    facts = platforms.ARCHES.get(goarch)
    deb = facts.debian_arch(variant or None) if facts else None
    if deb is None:
        raise ConfigError(f"unknown arch '{a}'; use a Debian arch ({', '.join(rootfs.DEBIAN_ARCHES)}) or "
                          "GOARCH[/variant]", file="command line", key="--arch")
    return deb


def run(ns: argparse.Namespace) -> int:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn
    from rich.table import Table

    from .. import rootfs

    console = out_console()
    store = rootfs.ImageStore()
    defs = rootfs.load_definitions()
    sub = ns.images_cmd or "list"
    if sub == "list":
        cached: dict[str, list[rootfs.CachedImage]] = {}
        for c in store.list():
            cached.setdefault(c.name, []).append(c)
        t = Table(show_edge=False)
        for col in ("image", "stands for", "kind", "cached arches", "size"):
            t.add_column(col)
        for name, d in sorted(defs.items()):
            entries = sorted(cached.get(name, []), key=lambda c: c.arch)
            kind = "exact (pulled by digest)" if name == "scratch" else "rebuilt equivalent"
            t.add_row(safe(name), safe(d.reference.image or "-"), kind,
                      ", ".join(c.arch for c in entries) or "-", human_size(sum(c.size for c in entries)))
        console.print(t)
        for name, d in sorted(defs.items()):
            console.print(f"[bold]{safe(name)}[/]: {safe(d.fidelity)}", highlight=False)
        return 0
    if sub == "build":
        if ns.name not in defs:
            raise ConfigError(f"unknown image '{ns.name}'; known: {', '.join(sorted(defs))}",
                              file="command line", key="images build")
        arches = [_debian_arch(a) for a in ns.arch] or list(rootfs.DEBIAN_ARCHES)
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=console,
                      transient=True) as bar:
            for deb in arches:
                task = bar.add_task(f"{ns.name}/{deb}", total=None)

                def cb(stage: str, done: int, total: int, task: Any = task, deb: str = deb) -> None:
                    bar.update(task, description=f"{ns.name}/{deb}: {stage}", completed=done,
                               total=total or None)
                root = store.ensure(ns.name, deb, cb, refresh=ns.refresh)
                bar.remove_task(task)
                console.print(safe(f"{ns.name}/{deb}: {root}"), highlight=False)
        return 0
    if sub == "path":
        found = store.path(ns.name, _debian_arch(ns.arch))
        if found is None:
            raise InfraError(f"image {ns.name} for {ns.arch} is not cached",
                             f"build it: xrun images build {ns.name} --arch {ns.arch}")
        console.print(safe(found), highlight=False, soft_wrap=True)
        return 0
    if sub == "verify":
        if ns.name is not None and ns.name not in defs:
            raise ConfigError(f"unknown image '{ns.name}'; known: {', '.join(sorted(defs))}",
                              file="command line", key="images verify")
        checked = store.verify(ns.name)
        bad = 0
        for img, problems in checked:
            if not problems:
                console.print(safe(f"{img.name}/{img.arch}: ok ({img.manifest.parent})"), highlight=False)
                continue
            bad += 1
            console.print(f"[red]{safe(img.name)}/{safe(img.arch)}: modified, removed (the next run "
                          "rebuilds it)[/]", highlight=False)
            for pr in problems[:20]:
                console.print(f"  {safe(pr)}", highlight=False)
            if len(problems) > 20:
                console.print(f"  ... and {len(problems) - 20} more", highlight=False)
        if not checked:
            console.print("no cached image" + (f" of {safe(ns.name)}" if ns.name else ""))
        return 1 if bad else 0
    freed = store.prune(all_entries=ns.all)
    console.print(f"freed {human_size(freed)}")
    return 0
