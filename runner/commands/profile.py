"""`xrun profile capture [--name N] [--out PATH]` and `xrun profile show NAME|FILE [--matrix M]`: a real
machine's CPU as a profile (runner/profiles/), and what a profile resolves to."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import ConfigError, XarchError
from ..output.text import plain
from . import Subparsers


def add_parser(sub: Subparsers) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "profile", plain_errors=True, help="CPU profiles: capture this machine's, show what one is",
        description="Profiles from real machines: capture this machine's /proc/cpuinfo for a matrix's "
                    "profiles (`{name: N, cpuinfo: FILE}`), or show the qemu CPU and features a profile resolves to.")
    ps = p.add_subparsers(dest="profile_command", metavar="{capture,show}")
    c = ps.add_parser("capture", help="write this machine's /proc/cpuinfo (first CPU) and print the profile entry")
    c.add_argument("--name", default=None, help="the profile's name (default: this host's name)")
    c.add_argument("--out", type=Path, default=None, help="the file (or directory) to write (default: NAME.cpuinfo)")
    c.add_argument("--from", dest="source", type=Path, default=Path("/proc/cpuinfo"), help=argparse.SUPPRESS)
    s = ps.add_parser("show", help="print a profile's qemu command line per arch and its features")
    s.add_argument("name", help="a builtin profile (pi-zero, graviton3, ...), a profile of --matrix, or a cpuinfo file")
    s.add_argument("--matrix", type=Path, default=None, help="the matrix whose profiles to look in")
    p.set_defaults(run=run, _parser=p)
    return p


def run(ns: argparse.Namespace) -> int:
    if ns.profile_command == "capture":
        from ..profiles.capture import capture

        name = ns.name or os.uname().nodename.split(".")[0] or "this-machine"
        try:
            dest, entry = capture(name, ns.out, ns.source)
        except (OSError, ValueError) as e:
            print(f"xrun: profile capture: {e}", file=sys.stderr)
            return 2
        print(f"# wrote {dest}; add this under profiles: in matrix.yaml (the path is relative to it)")
        print(entry)
        return 0
    if ns.profile_command == "show":
        try:
            print(show(ns.name, ns.matrix))
        except XarchError as e:
            print(f"xrun: {plain(e)}", file=sys.stderr)
            return e.exit_code
        return 0
    ns._parser.print_help()
    return 2


def show(name: str, matrix: Path | None) -> str:
    from .. import platforms
    from ..plan import Profile, builtin_profile
    from ..profiles import BUILTIN_PROFILES, describe_builtin, read_cpuinfo, resolve_machine
    from ..profiles.machine import machine_level

    prof: Profile | None = None
    title = name
    if matrix is not None:
        from ..matrix import load

        prof = next((c.profile for c in load(matrix).cells if c.profile.name == name), None)
    if prof is None and name in BUILTIN_PROFILES:
        prof = builtin_profile(name)
        title = f"{name}: {describe_builtin(name) or 'builtin'}"
    if prof is None and Path(name).is_file():
        res = resolve_machine(read_cpuinfo(Path(name), name))
        prof = Profile.of_machine(Path(name).stem, res, name)
        title = f"{name} ({read_cpuinfo(Path(name), name).name})"
    if prof is None:
        where = f" in {matrix}" if matrix else ""
        raise ConfigError(f"no profile '{name}'{where}; builtin: {', '.join(BUILTIN_PROFILES)}, or a cpuinfo file")
    if prof.source and prof.source != "catalogue":
        title += f" (from {prof.source})"
    lines = [title]
    if prof.name in ("baseline", "host") and prof.builtin:
        lines.append("  baseline: the oldest qemu model of each target's level; host: native, no qemu")
        return "\n".join(lines)
    for goarch, cpu in prof.cpu.items():
        a = platforms.arch(goarch)
        lines.append(f"  {goarch}: qemu-{a.qemu}-static -cpu {a.cpu_arg(cpu)} PROGRAM")
        m = prof.machine.get(goarch)
        if m is None:
            continue
        base = set(platforms.LEVEL_EXTENSIONS.get(goarch, {}).get(a.levels[0] if a.levels else "", frozenset()))
        feats = sorted(m.features - base - {"x87", "MMX", "CMOV", "ARMv8.0"})
        lines.append(f"    has: {', '.join(feats) or '(the arch baseline only)'}")
        if a.levels:
            top = machine_level(m)
            lines.append(f"    Go level to build for: {top}" if top else f"    runs no Go {goarch} level")
        if m.missing:
            lines.append(f"    not emulated: {', '.join(m.missing)} (a cell that needs it: emulation-unsupported)")
        if m.extra:
            lines.append(f"    emulated beyond the machine: {', '.join(m.extra)} (qemu cannot turn it off)")
        for n in m.notes:
            if not n.startswith(("qemu cannot give", "the emulated CPU also has")):
                lines.append(f"    note: {n}")
    return "\n".join(lines)
