"""A real machine's CPU, from its /proc/cpuinfo, as the qemu CPU that offers what it offers.

`parse_cpuinfo` reads what the kernel says the machine has (x86 `flags`; arm and arm64 `Features`,
`CPU architecture` and `CPU part`; ppc `cpu`; riscv `isa`; s390x `features`), in the extension names
of platforms.MODEL_EXTENSIONS. `resolve` picks, of the models qemu has, the one that needs the fewest
changes, with a model qemu cannot make weaker than the machine counted worst (a false green), then
adds and removes features (features.TOGGLES) until the emulated CPU offers what the machine offers.
What no model or toggle gives is listed (`missing`: a cell needing it is emulation-unsupported, not
the binary's fault), and so is what the emulated CPU has beyond the machine (`extra`: qemu cannot turn
it off, so a cell using it is green here and not there).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .. import platforms
from ..errors import ConfigError
from .features import EXTRA_EXTENSIONS, FLAGS, MODEL_TOGGLES, NEEDS, PARTS, TOGGLES, baseline

__all__ = ["Machine", "Resolved", "parse_cpuinfo", "resolve", "resolve_machine"]

# cores that run 32-bit (AArch32) programs at EL0, so a 64-bit capture also makes an arm profile
_AARCH32_PARTS = frozenset({"0xd03", "0xd04", "0xd07", "0xd08", "0xd0b", "0xd0c"})
_ARM_ARCH = {"5": "v5", "6": "v6", "7": "v7"}
_PPC = (("POWER10", "power10"), ("POWER9", "power9"), ("POWER8", "power8"), ("POWER7", "power7"))


@dataclass(frozen=True)
class Machine:
    """What a /proc/cpuinfo says, per GOARCH the machine runs: the extensions and the core's qemu model."""

    source: str                                     # the file, for messages
    name: str                                       # its "model name" / "cpu" / "Hardware" line
    features: Mapping[str, frozenset[str]]          # goarch -> extensions
    models: Mapping[str, str] = field(default_factory=dict)     # goarch -> the qemu model of its exact core


@dataclass(frozen=True)
class Resolved:
    """One arch of a machine as a qemu CPU: `cpu` is what `-cpu` gets."""

    goarch: str
    cpu: str
    features: frozenset[str]                        # what the machine has
    emulated: frozenset[str]                        # what the model and its toggles give
    missing: tuple[str, ...] = ()                   # the machine has; qemu cannot give (emulation-unsupported)
    extra: tuple[str, ...] = ()                     # qemu gives; the machine lacks (cannot be turned off)
    notes: tuple[str, ...] = ()

    def lacks(self, ext: str) -> bool:
        return ext not in self.features


def _fields(text: str) -> list[tuple[int, str, str]]:
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        k, sep, v = line.partition(":")
        if sep:
            out.append((i, k.strip().lower(), v.strip()))
    return out


def _first(fields: list[tuple[int, str, str]], *keys: str) -> tuple[int, str] | None:
    for i, k, v in fields:
        if k in keys:
            return i, v
    return None


def _checked(goarch: str, have: set[str] | frozenset[str], where: str) -> frozenset[str]:
    """The extensions, refusing a set no CPU has (an extension without what it needs): a hand-edited file."""
    needs = NEEDS.get(goarch, {})
    for ext in sorted(have):
        for need in needs.get(ext, ()):
            if need not in have:
                raise ConfigError(f"{where}: lists {ext} without {need}, which it needs: no CPU (and no qemu "
                                  f"model) offers that; is the file edited by hand?")
    return frozenset(have | baseline(goarch))


def _flags_of(goarch: str, words: Iterable[str]) -> set[str]:
    table = FLAGS.get(goarch, {})
    return {table[w] for w in words if w in table}


def parse_cpuinfo(text: str, source: str) -> Machine:
    """The machine a captured /proc/cpuinfo describes (ConfigError naming file:line when it is none)."""
    f = _fields(text)
    if not f:
        raise ConfigError(f"{source}: not a /proc/cpuinfo (no 'key : value' lines); capture one with "
                          "`cat /proc/cpuinfo > FILE` on the machine, or `xrun profile capture`")
    if (hit := _first(f, "flags")) is not None:                          # x86
        line, v = hit
        x86 = v.split()
        name = (_first(f, "model name") or (0, "an x86 CPU"))[1]
        x86_have = _checked("amd64", _flags_of("amd64", x86), f"{source}:{line}: flags")
        feats: dict[str, frozenset[str]] = {"386": x86_have}
        if "lm" in x86:
            feats["amd64"] = x86_have
        return Machine(source, name, feats)
    if (hit := _first(f, "features")) is not None and _first(f, "cpu architecture") is not None:   # arm, arm64
        line, v = hit
        words: set[str] = set(v.split())
        part = (_first(f, "cpu part") or (0, ""))[1].lower()
        arch_line, arch_v = _first(f, "cpu architecture") or (0, "")
        name = (_first(f, "model name", "hardware") or (0, f"an Arm CPU (part {part or '?'})"))[1]
        if "asimd" in words or arch_v.startswith(("8", "AArch64")):      # a 64-bit kernel's view
            feats = {"arm64": _checked("arm64", _flags_of("arm64", words), f"{source}:{line}: Features")}
            models = {"arm64": PARTS["arm64"][part]} if part in PARTS["arm64"] else {}
            if part in _AARCH32_PARTS:
                # AArch32 on an ARMv8 core: all of ARMv7 with VFPv4 and NEON, and the v8 additions
                a32 = set(platforms.MODEL_EXTENSIONS["arm"]["cortex-a15"]) | {"ARMv8"}
                a32 |= {"CRC32"} if "crc32" in words else set()
                a32 |= {"ARMv8 crypto"} if "aes" in words else set()
                feats["arm"] = frozenset(a32)
            return Machine(source, name, feats, models)
        model = PARTS["arm"].get(part)
        have = _flags_of("arm", words)
        if model is not None:       # the exact core: its architecture extensions from the model table
            arch_exts = {e for e in platforms.MODEL_EXTENSIONS["arm"][model] if e.startswith("ARMv")}
        else:
            m = re.search(r"\(v(\d)", name) or re.match(r"(\d)", arch_v)
            lvl = _ARM_ARCH.get(m.group(1) if m else "")
            if lvl is None:
                raise ConfigError(f"{source}:{arch_line}: CPU architecture: '{arch_v}' names no arm level xarch "
                                  "knows (v5, v6, v7, 8)")
            ref = platforms.arch("arm").baseline.get(lvl, "cortex-a7")
            arch_exts = {e for e in platforms.MODEL_EXTENSIONS["arm"][ref] if e.startswith("ARMv")}
        return Machine(source, name, {"arm": _checked("arm", have | arch_exts, f"{source}:{line}: Features")},
                       {"arm": model} if model else {})
    if (hit := _first(f, "isa")) is not None and hit[1].startswith("rv64"):          # riscv64
        line, v = hit
        base, *zexts = v.lower().split("_")
        rv = set(base[4:].replace("g", "imafd")) | set(zexts)
        name = (_first(f, "uarch", "model name") or (0, "a RISC-V CPU"))[1]
        return Machine(source, name, {"riscv64": _checked("riscv64", _flags_of("riscv64", rv),
                                                          f"{source}:{line}: isa")})
    if (hit := _first(f, "cpu")) is not None and hit[1].upper().startswith("POWER"):  # ppc64le
        line, v = hit
        for key, model in _PPC:
            if v.upper().startswith(key):
                ppc = frozenset(platforms.MODEL_EXTENSIONS["ppc64le"][model])
                return Machine(source, v, {"ppc64le": ppc, "ppc64": ppc}, {"ppc64le": model, "ppc64": model})
        raise ConfigError(f"{source}:{line}: cpu: '{v}' is no POWER generation xarch knows (POWER7 to POWER10)")
    if (hit := _first(f, "features")) is not None and (_first(f, "vendor_id") or (0, ""))[1].startswith("IBM/S390"):
        line, v = hit
        name = (_first(f, "processor 0", "machine") or (0, "an IBM Z CPU"))[1]
        z = _flags_of("s390x", v.split())
        if "vector facility (z13)" in z:     # a z13 or newer has every z196 facility (cpuinfo lists none)
            z |= platforms.MODEL_EXTENSIONS["s390x"]["qemu"]
        return Machine(source, name, {"s390x": _checked("s390x", z, f"{source}:{line}: features")})
    raise ConfigError(f"{source}: no line xarch reads a CPU from (x86 'flags', arm 'Features' with "
                      "'CPU architecture', ppc 'cpu', riscv 'isa', s390x 'features'): is it a /proc/cpuinfo?")


def _order(goarch: str, exts: Iterable[str]) -> list[str]:
    """Extensions with what each needs first (so +xsave comes before +avx)."""
    needs, done, out = NEEDS.get(goarch, {}), set(), []

    def visit(e: str) -> None:
        if e in done:
            return
        done.add(e)
        for n in needs.get(e, ()):
            visit(n)
        out.append(e)

    for e in sorted(exts):
        visit(e)
    return out


def _try(goarch: str, model: str, base: frozenset[str], want: frozenset[str]) -> tuple[str, frozenset[str]]:
    toggles = {**TOGGLES.get(goarch, {}), **MODEL_TOGGLES.get(goarch, {}).get(model, {})}
    have = set(base)
    on = [e for e in _order(goarch, want - base) if e in toggles and e not in base]
    off = [e for e in reversed(_order(goarch, base - want)) if e in toggles and e not in want]
    have |= set(on)
    have -= set(off)
    parts = [model, *(toggles[e][0] for e in on), *(toggles[e][1] for e in off)]
    return ",".join(parts), frozenset(have)


def resolve(goarch: str, features: frozenset[str], exact: str | None = None,
            available: Iterable[str] | None = None) -> Resolved:
    """The qemu CPU for a machine's extensions on one arch (`exact`: the qemu model of its very core)."""
    table = platforms.MODEL_EXTENSIONS.get(goarch, {})
    avail = set(available) if available is not None else None
    names = [m for m in table if "," not in m and (avail is None or m in avail)]
    if not names:
        raise ConfigError(f"no qemu CPU model of {goarch} is known to xarch to match a machine against")
    tracked = set().union(*table.values()) | EXTRA_EXTENSIONS.get(goarch, frozenset()) | set(FLAGS.get(goarch, {}).values())
    want = frozenset(features & tracked) | baseline(goarch)
    tcg = platforms.TCG_LACKS.get(goarch, frozenset())
    best: tuple[tuple[int, int, int], str, frozenset[str]] | None = None
    for i, m in enumerate(names):
        cpu, have = _try(goarch, m, frozenset(table[m]), want)
        # the machine's own core first; then a model that offers more than the machine is worst (a false
        # green); ties: fewer toggles, then the older model (a newer one has more the tables do not track)
        off_core = 0 if exact is None or m == exact else 1
        key = (off_core, len(have - want) * 10 + len(want - have), cpu.count(",") * 100 + i)
        if best is None or key < best[0]:
            best = (key, cpu, have)
    assert best is not None
    _, cpu, have = best
    missing = tuple(sorted((want - have) | (want & have & tcg)))
    extra = tuple(sorted(have - want))
    notes = []
    if missing:
        notes.append(f"qemu cannot give {', '.join(missing)}: a cell that needs it is emulation-unsupported")
    if extra:
        notes.append(f"the emulated CPU also has {', '.join(extra)}, which the machine lacks (qemu cannot turn it "
                     "off): code using it passes here and fails there")
    return Resolved(goarch, cpu, frozenset(features), frozenset(have), missing, extra, tuple(notes))


def resolve_machine(m: Machine, available: Mapping[str, Iterable[str] | None] | None = None) -> dict[str, Resolved]:
    """Every arch of a machine resolved (`available`: qemu's own model list per arch, when known)."""
    return {a: resolve(a, feats, m.models.get(a), (available or {}).get(a)) for a, feats in m.features.items()}


def read_cpuinfo(path: Path, shown: str) -> Machine:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise ConfigError(f"{shown}: cannot read the cpuinfo file ({e.strerror or e})") from None
    return parse_cpuinfo(text, shown)


def level_gap(r: Resolved, level: str | None) -> tuple[str, ...] | None:
    """What a Go level needs that the machine lacks (None: the level is not in the tables)."""
    a = platforms.ARCHES.get(r.goarch)
    need = platforms.LEVEL_EXTENSIONS.get(r.goarch, {}).get(level or (a.default_level if a else "") or "")
    return None if need is None else tuple(sorted(need - r.features))


def machine_level(r: Resolved) -> str | None:
    """The Go level to build for this machine (None: it runs not even the lowest): the highest it has the
    extensions of, or rather the lowest level needing the same (arm64 v8.1 to v9.5 need nothing more
    that xarch's tables know of than LSE and RDM, so v8.1 it is)."""
    a = platforms.ARCHES.get(r.goarch)
    table = platforms.LEVEL_EXTENSIONS.get(r.goarch, {})
    best = None
    for lvl in (a.levels if a else ()):
        if level_gap(r, lvl) == () and (best is None or table.get(lvl) != table.get(best)):
            best = lvl
    return best


def from_cpu(goarch: str, cpu: str) -> Resolved | None:
    """A `cpu:` value with feature toggles (`Westmere,+avx`) as the CPU it gives, with what each toggle
    needs added (`+avx` brings `+xsave`) and what depends on a removed one removed (`-avx` takes avx2, fma).
    None for a plain model name, or a model xarch's tables do not know (passed to qemu as written)."""
    model, *parts = cpu.split(",")
    base = platforms.MODEL_EXTENSIONS.get(goarch, {}).get(model)
    if not parts or base is None:
        return None
    toggles = {**TOGGLES.get(goarch, {}), **MODEL_TOGGLES.get(goarch, {}).get(model, {})}
    spelled: dict[str, tuple[str, bool]] = {}
    for ext, (on, off) in toggles.items():
        for word in on.split(","):
            spelled.setdefault(word, (ext, True))
        for word in off.split(","):
            spelled.setdefault(word, (ext, False))
    have: set[str] = set(base)
    asked: list[tuple[str, bool]] = []
    kept: list[str] = []
    notes: list[str] = []
    for p in parts:
        hit = spelled.get(p) or spelled.get(p.replace("_", "."))
        if hit is None:
            kept.append(p)          # a toggle xarch does not track: qemu gets it as written
            continue
        asked.append(hit)
        (have.add if hit[1] else have.discard)(hit[0])
    for ext, turn_on in asked:
        if turn_on:
            deps = [d for d in _order(goarch, [ext]) if d not in have]
            if deps:
                have |= set(deps)
                notes.append(f"+{ext} needs {', '.join(deps)}: added")
        else:
            gone = {e for e in have if ext in _order(goarch, [e]) and e != ext}
            if gone:
                have -= gone
                notes.append(f"-{ext} also removes {', '.join(sorted(gone))}, which need it")
    resolved, emulated = _try(goarch, model, frozenset(base), frozenset(have))
    full = ",".join([resolved, *kept])
    tcg = tuple(sorted(emulated & platforms.TCG_LACKS.get(goarch, frozenset())))
    if tcg:
        notes.append(f"qemu cannot give {', '.join(tcg)}: a cell that needs it is emulation-unsupported")
    return Resolved(goarch, full, frozenset(emulated), frozenset(emulated), tcg, (), tuple(notes))
