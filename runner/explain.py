"""`xrun explain BINARY`: what a built file is, and which images and CPUs will run it, without running it.

Everything here is read from the file (ELF header, PT_INTERP, DT_NEEDED, symbol versions, GNU property
notes, the Go build info) and from the image definitions, or from an already built image in the cache.
Nothing is built, downloaded or executed. Predicted verdicts use the names of contract §2.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import NoteSection
from elftools.elf.segments import NoteSegment

from . import platforms
from .artifact import ArtifactFacts, inspect, loader_present
from .classify import advice
from .errors import ConfigError, UnknownImage
from .forensics import libc
from .profiles import BUILTIN_PROFILES, CATALOGUE, resolved_catalogue
from .profiles.machine import level_gap, machine_level
from .rootfs import ImageDef, ImageStore, load_definitions
from .rootfs.apt_sources import host_apt_sources, host_suite

__all__ = ["DEFAULT_IMAGES", "DEFAULT_PROFILES", "explain", "render_text"]

DEFAULT_IMAGES = ("scratch", "alpine", "distroless-static", "distroless-base")
DEFAULT_PROFILES = ("baseline",)

# EI_OSABI values other than SYSV/LINUX name the kernel outright; Go's linux binaries say SYSV.
_OSABI_GOOS = {"ELFOSABI_LINUX": "linux", "ELFOSABI_FREEBSD": "freebsd", "ELFOSABI_NETBSD": "netbsd",
               "ELFOSABI_OPENBSD": "openbsd", "ELFOSABI_SOLARIS": "solaris", "ELFOSABI_AIX": "aix"}
_FORMAT_GOOS = {"pe": "windows", "macho": "darwin"}

# GNU_PROPERTY_X86_ISA_1_NEEDED bits (x86-64 psABI) and the GOAMD64 level each one means.
_X86_ISA_BITS = ((0x1, "x86-64-baseline", "v1"), (0x2, "x86-64-v2", "v2"), (0x4, "x86-64-v3", "v3"),
                 (0x8, "x86-64-v4", "v4"))

# glibc of each Debian suite the images are rebuilt from (the rebuilt libc6 follows the suite).
_DEBIAN_GLIBC = {"buster": "2.28", "bullseye": "2.31", "bookworm": "2.36", "trixie": "2.41"}
_DEBIAN_RELEASES = {"10": "buster", "11": "bullseye", "12": "bookworm", "13": "trixie", "14": "forky"}

# Shared objects a package puts in an image, for predictions made from a definition (no cached rootfs).
_PACKAGE_LIBS: Mapping[str, tuple[str, ...]] = {
    "libc6": ("libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libresolv.so.2",
              "libutil.so.1", "libanl.so.1", "libmvec.so.1", "libBrokenLocale.so.1", "libnss_files.so.2",
              "libnss_dns.so.2", "libthread_db.so.1", "libc_malloc_debug.so.0"),
    "libssl3": ("libssl.so.3", "libcrypto.so.3"),
    "libssl3t64": ("libssl.so.3", "libcrypto.so.3"),
    "libgcc-s1": ("libgcc_s.so.1",),
    "libstdc++6": ("libstdc++.so.6",),
}
# musl's loader is its libc: it answers these DT_NEEDED names itself (ldso/dynlink.c, "reserved").
_MUSL_SELF = re.compile(r"^lib(c|pthread|rt|m|dl|util|xnet)\.")


@dataclass(frozen=True)
class _Binary:
    """The facts every prediction needs, resolved once."""

    facts: ArtifactFacts
    goos: str | None
    goarch: str | None
    arch: platforms.Arch | None
    level: str | None
    level_text: str                   # how the level is known: "GOARM=7", "x86 ISA needed: x86-64-v3", ...
    isa: tuple[str, ...]              # x86 ISA levels of the GNU property note
    blocked: tuple[str, str] | None   # (verdict, reason) when no image or CPU matters


@dataclass(frozen=True)
class _ImageView:
    """What one image offers a dynamically linked binary of one Debian arch."""

    name: str
    basis: str                                          # "cache" or "definition"
    loaders: Mapping[str, str] = field(default_factory=dict)   # guest path -> "glibc" | "musl"
    libs: frozenset[str] = frozenset()                  # definition basis only
    root: Path | None = None                            # cache basis only
    glibc: str | None = None                            # "2.36"
    glibc_from: str = ""                                # "Debian bookworm"

    def has_loader(self, interp: str) -> bool:
        return loader_present(self.root, interp) if self.root is not None else interp in self.loaders

    def has_lib(self, soname: str, interp: str) -> bool:
        """Whether the loader can satisfy DT_NEEDED soname in this image."""
        if soname == PurePosixPath(interp).name:
            return True
        if _libc_of(interp) == "musl" and _MUSL_SELF.match(soname):
            return True
        if self.root is None:
            return soname in self.libs
        dirs = ["/lib", "/lib64", "/usr/lib", "/usr/lib64"]
        usr_lib = self.root / "usr" / "lib"
        if usr_lib.is_dir():
            # Debian's multiarch directories (x86_64-linux-gnu, ...), where the loader looks by default.
            dirs += [f"/usr/lib/{d.name}" for d in usr_lib.iterdir() if "-linux-" in d.name]
        return any(loader_present(self.root, f"{d}/{soname}") for d in dirs)


def _libc_of(interp: str) -> str | None:
    """Which C library a PT_INTERP belongs to."""
    name = PurePosixPath(interp).name
    if name.startswith("ld-musl"):
        return "musl"
    if name.startswith(("ld-linux", "ld64.so", "ld.so")):
        return "glibc"
    return None


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v))


# --------------------------------------------------------------------------
# Facts


def _x86_isa_needed(path: str) -> list[str]:
    """The x86 ISA levels of the GNU property note (what glibc's loader checks), oldest first."""
    bits = 0
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            notes: list[NoteSection | NoteSegment] = [s for s in elf.iter_sections() if isinstance(s, NoteSection)]
            if not notes:
                # Section headers can be stripped; the PT_NOTE segments hold the same notes.
                notes = [s for s in elf.iter_segments() if isinstance(s, NoteSegment)]
            for holder in notes:
                for note in holder.iter_notes():
                    if note["n_type"] != "NT_GNU_PROPERTY_TYPE_0":
                        continue
                    for prop in note["n_desc"]:
                        if prop.pr_type == "GNU_PROPERTY_X86_ISA_1_NEEDED" and isinstance(prop.pr_data, int):
                            bits |= prop.pr_data
    except (ELFError, OSError, ValueError, KeyError, AttributeError):
        return []
    return [name for bit, name, _ in _X86_ISA_BITS if bits & bit]


def _go_section(facts: ArtifactFacts, arch: platforms.Arch | None) -> dict[str, Any] | None:
    """The Go version and the build settings that decide where the binary runs."""
    bi = facts.build
    if bi is None:
        return None
    s = dict(bi.settings)
    level_var = arch.level_var if arch else None
    cgo = s.get("CGO_ENABLED")
    vcs = None
    if "vcs" in s:
        vcs = {"system": s["vcs"], "revision": s.get("vcs.revision"), "time": s.get("vcs.time"),
               "modified": s.get("vcs.modified") == "true"}
    return {
        "version": bi.go_version,
        "path": bi.path,
        "module": bi.main_module,
        "module_version": bi.main_version,
        "goos": s.get("GOOS"),
        "goarch": s.get("GOARCH"),
        "level_var": level_var,
        "level_value": s.get(level_var) if level_var else None,
        "cgo_enabled": None if cgo is None else cgo == "1",
        "buildmode": s.get("-buildmode"),
        "trimpath": s.get("-trimpath") == "true",
        "tags": [t for t in s.get("-tags", "").split(",") if t],
        "ldflags": s.get("-ldflags"),
        "vcs": vcs,
        "settings": s,
    }


def _level(facts: ArtifactFacts, arch: platforms.Arch | None, isa: list[str]) -> tuple[str | None, str]:
    """The CPU level the binary needs: the higher of Go's level and the x86 ISA note's."""
    if arch is None or not arch.levels:
        return None, "no CPU level for this arch"
    bi = facts.build
    raw = bi.setting(arch.level_var) if bi is not None and arch.level_var else None
    go_level = arch.level_from_env(raw) if raw else (arch.default_level if bi is not None else None)
    text = (f"{arch.level_var}={raw}" if raw else
            f"{arch.level_var}={arch.env_value(go_level)} (Go's default)" if go_level and arch.level_var else "")
    note = [lvl for _, name, lvl in _X86_ISA_BITS if name in isa and lvl in arch.levels]
    if note and (go_level is None or arch.level_index(note[-1]) > arch.level_index(go_level)):
        return note[-1], f"x86 ISA needed: {isa[-1]} (GNU property note)"
    if go_level is None:
        return arch.default_level, f"assumed {arch.goarch} {arch.default_level} (no Go build info)"
    return go_level, text


def _resolve(facts: ArtifactFacts) -> _Binary:
    bi = facts.build
    bi_goos = bi.setting("GOOS") if bi else None
    bi_goarch = bi.setting("GOARCH") if bi else None
    goos: str | None
    if facts.format == "elf":
        goos = bi_goos or _OSABI_GOOS.get(facts.osabi or "") or "linux"
    else:
        goos = bi_goos or _FORMAT_GOOS.get(facts.format)
    goarch = facts.goarch or bi_goarch
    arch = platforms.ARCHES.get(goarch or "")
    isa = _x86_isa_needed(facts.path) if facts.format == "elf" else []
    level, level_text = _level(facts, arch, isa)
    return _Binary(facts, goos, goarch, arch, level, level_text, tuple(isa),
                   _blocked(facts, goos, goarch, arch))


def _blocked(facts: ArtifactFacts, goos: str | None, goarch: str | None,
             arch: platforms.Arch | None) -> tuple[str, str] | None:
    """(verdict, reason) when the file cannot run here at all, whatever the image or CPU."""
    fmt = facts.format
    if fmt == "unknown":
        why = facts.osabi if (facts.osabi or "").startswith("unreadable ELF") else "no ELF, #! or other magic"
        return "exec-format-error", f"not an executable the kernel knows: {why}"
    if fmt == "script":
        return "not-runnable", "a script (#!), not a compiled executable; xrun runs built binaries"
    if fmt != "elf" or goos != "linux":
        os_ = platforms.OSES.get(goos or "")
        why = os_.why_not if os_ else f"a {facts.describe()} for GOOS={goos or 'unknown'} cannot run on Linux"
        return "not-runnable", why
    if arch is None or arch.qemu is None:
        return "exec-format-error", (f"{facts.elf_machine} {facts.elf_class}-bit {facts.endian}-endian is no GOARCH "
                                     "xrun can emulate")
    return None


def _facts_section(b: _Binary) -> dict[str, Any]:
    f = b.facts
    header = None
    if f.format == "elf":
        header = {"machine": f.elf_machine, "class": f.elf_class, "endian": f.endian, "osabi": f.osabi,
                  "e_flags": f.e_flags, "goarch": f.goarch}
    go = _go_section(f, b.arch)
    warnings = []
    if go and f.goarch and go["goarch"] and go["goarch"] != f.goarch:
        warnings.append(f"the ELF header says {f.goarch} but the Go build info says GOARCH={go['goarch']}")
    glibc = f.glibc_max.removeprefix("GLIBC_") if f.glibc_max else None
    return {
        "format": f.format,
        "description": f.describe(),
        "size": f.size,
        "goos": b.goos,
        "goarch": b.goarch,
        "header": header,
        "go": go,
        "interp": f.interp,
        "libc": _libc_of(f.interp) if f.interp else None,
        "needed": list(f.needed),
        "glibc_required": glibc,
        "static": f.static,
        "isa": {"level": b.level, "how": b.level_text, "x86_isa_needed": list(b.isa) or None},
        "warnings": warnings,
    }


# --------------------------------------------------------------------------
# Images


def _host_suite() -> str | None:
    """The Debian suite xrun would rebuild images from (read from apt's config, nothing fetched)."""
    try:
        return host_suite(host_apt_sources())
    except (OSError, ValueError):
        return None


def _image_view(defn: ImageDef, deb: str | None, store: ImageStore | None,
                suite: str | None) -> _ImageView | None:
    """The image as built in the cache, else as its definition describes it; None if xrun cannot build it."""
    pkgs = {alt.strip() for spec in defn.packages for alt in spec.split("|")}
    if not pkgs:
        return _ImageView(defn.name, "definition")
    if deb is None or deb not in platforms.DEBIAN_ARCHES:
        return None
    info = platforms.DEBIAN_ARCHES[deb]
    glibc_ld, musl_ld = info.glibc_loader, f"/lib/ld-musl-{info.musl_arch}.so.1"
    root = None
    if store is not None:
        try:
            root = store.path(defn.name, deb)
        except UnknownImage:
            root = None
    if root is not None:
        loaders = {p: libc for p, libc in ((glibc_ld, "glibc"), (musl_ld, "musl")) if loader_present(root, p)}
        glibc, origin = None, "the cached image"
        try:
            manifest = json.loads((root.parent / "manifest.json").read_text(encoding="utf-8"))
            origin = f"Debian {manifest.get('suite') or '(unknown suite)'}"
            libc6 = next((p for p in manifest.get("packages", []) if p.get("name") == "libc6"), None)
            if libc6 and (m := re.match(r"(?:\d+:)?(\d+\.\d+)", str(libc6.get("version", "")))):
                glibc = m.group(1)
        except (OSError, ValueError, AttributeError):
            pass
        read = libc.image_libc(root)     # the image's own libc.so.6 says it best (an image from elsewhere too)
        if read and read.startswith("glibc "):
            glibc = read.split(" ", 1)[1]
        return _ImageView(defn.name, "cache", loaders, root=root, glibc=glibc if "glibc" in loaders.values()
                          else None, glibc_from=origin)
    loaders = {}
    if "libc6" in pkgs:
        loaders[glibc_ld] = "glibc"
    if "musl" in pkgs:
        loaders[musl_ld] = "musl"
    if suite is None:
        # No apt configuration to go by: the suite of the real image (…-debian12) it stands for.
        m = re.search(r"debian(\d+)", defn.reference.image)
        suite = _DEBIAN_RELEASES.get(m.group(1)) if m else None
    libs = frozenset(lib for p in pkgs for lib in _PACKAGE_LIBS.get(p, ()))
    return _ImageView(defn.name, "definition", loaders, libs,
                      glibc=_DEBIAN_GLIBC.get(suite or "") if "libc6" in pkgs else None,
                      glibc_from=f"Debian {suite}" if suite else "Debian")


def _prediction(verdict: str | None, summary: str, reason: str, fix: str | None = None,
                **extra: Any) -> dict[str, Any]:
    return {"verdict": verdict, "summary": summary, "reason": reason, "fix": fix, **extra}


def _fail(verdict: str, reason: str, fix: str | None, **extra: Any) -> dict[str, Any]:
    summary = "not-runnable here" if verdict == "not-runnable" else f"will fail: {verdict}"
    return _prediction(verdict, summary, reason, fix, **extra)


def _loader_fix(b: _Binary, interp: str, providers: list[str]) -> str:
    """What to change when the image lacks the loader (same advice as the missing-loader verdict)."""
    bi = b.facts.build
    return advice.loader_fix(interp, bi is not None and bi.setting("CGO_ENABLED") == "1",
                             bi is not None and bi.setting("-buildmode") == "pie", ", ".join(providers))


def _predict_image(b: _Binary, name: str, view: _ImageView | None, providers: list[str]) -> dict[str, Any]:
    f = b.facts
    basis = view.basis if view else "definition"
    if b.blocked:
        return _fail(*b.blocked, "the build and artifact checks still cover it", image=name, basis=basis)
    if f.interp is None:
        return _prediction("ok", "ok", "static: needs no loader or library from the image", image=name, basis=basis)
    if view is None:
        deb = b.arch.debian_arch(b.level) if b.arch else None
        return _fail("infra-error", f"xrun cannot rebuild {name} for {b.goarch} (Debian arch {deb or 'none'})",
                     "use the scratch image for this target", image=name, basis=basis)
    interp = f.interp
    if not view.has_loader(interp):
        mine, theirs = _libc_of(interp), sorted(set(view.loaders.values()))
        if not view.loaders:
            why = f"needs {interp}; {name} has no dynamic loader"
        elif mine and mine not in theirs:
            why = f"needs {interp}, a {mine} loader; {name} has only {' and '.join(theirs)}"
        else:
            why = f"needs {interp}; {name} has {', '.join(view.loaders)}"
        return _fail("missing-loader", why, _loader_fix(b, interp, providers), image=name, basis=basis)
    missing = [lib for lib in f.needed if not view.has_lib(lib, interp)]
    if missing:
        return _fail("missing-library", f"needs {', '.join(missing)}, which {name} does not have",
                     f"build with CGO_ENABLED=0 for a static binary, or use an image that provides "
                     f"{', '.join(missing)}", image=name, basis=basis)
    req = f.glibc_max.removeprefix("GLIBC_") if f.glibc_max else None
    if req and _libc_of(interp) == "glibc":
        has = f"{name} = {view.glibc_from} glibc {view.glibc}" if view.glibc else f"{name}'s glibc version is unknown"
        if view.glibc and _version(view.glibc) < _version(req):
            newer = libc.needing(f.path, above=_version(view.glibc))
            vers = list(dict.fromkeys(v for _, v in newer)) or [f"GLIBC_{req}"]
            return _fail("missing-library", f"{advice.too_new_for_glibc(list(newer), vers)}; {has}",
                         advice.glibc_fix(f"{b.goos}/{b.goarch}", view.glibc, req, [n for n, _ in newer]),
                         image=name, basis=basis,
                         symbols=[{"name": n, "version": v} for n, v in newer], image_libc=f"glibc {view.glibc}")
        return _prediction("ok", f"ok if glibc >= {req} is present", f"needs GLIBC_{req}; {has}",
                           image=name, basis=basis)
    return _prediction("ok", "ok", f"{name} has {interp}" + (f" and {', '.join(f.needed)}" if f.needed else ""),
                       image=name, basis=basis)


# --------------------------------------------------------------------------
# Profiles


def _known_profile(name: str) -> bool:
    return name in BUILTIN_PROFILES or any(a.model(name) for a in platforms.ARCHES.values())


def _predict_profile(b: _Binary, name: str) -> dict[str, Any]:
    if b.blocked:
        return _fail(*b.blocked, "the build and artifact checks still cover it", profile=name, cpu=None)
    a = b.arch
    assert a is not None  # not blocked: the arch is known
    note = f"; {a.run_env_why}" if a.run_env_why else ""
    if name == "host":
        host = platforms.host_goarch()
        if a.goarch != host:
            return _prediction(None, "no cell", f"host runs only {host} binaries natively", profile=name, cpu=None)
        return _prediction("ok", "runs natively", f"this host is {host}; no CPU restriction", profile=name,
                           cpu="native")
    if name == "baseline":
        model = a.baseline_model(b.level)
        if model is None:
            return _fail("infra-error", f"no qemu CPU model is known for {a.goarch} {b.level}",
                         "name a CPU model in a custom profile", profile=name, cpu=None)
        if (gap := _tcg_gap(a, model, b.level, name)) is not None:
            return gap
        return _prediction("ok", f"runs on {model}", f"{b.level_text}: the oldest qemu model for {a.goarch}"
                           + (f" {b.level}" if b.level else "") + note, profile=name, cpu=model)
    if name in CATALOGUE:
        return _predict_machine(b, name)
    hw = platforms.HARDWARE_PROFILES.get(name)
    model = hw.cpu.get(a.goarch) if hw else name
    if model is None or (hw is None and a.model(model) is None):
        why = (f"{name} names a CPU only for {', '.join(hw.cpu)}, not {a.goarch}" if hw
               else f"{name} is not a CPU model of {a.goarch}")
        return _prediction(None, "no cell", why, profile=name, cpu=None)
    m = a.model(model)
    if m is None:
        return _prediction(None, "unknown", f"{model} is not in xarch's {a.goarch} model table, so its level is "
                           "unknown; run the cell to find out", profile=name, cpu=model)
    if not a.levels:
        ok = model in a.baseline.values()
        return _prediction("ok" if ok else None, f"runs on {model}" if ok else "unknown",
                           f"{a.goarch} has no levels; {model} is {'' if ok else 'not '}a verified model",
                           profile=name, cpu=model)
    if m.level is None or (b.level and a.level_index(b.level) > a.level_index(m.level)):
        runs = f"runs up to {a.goarch} {m.level}" if m.level else f"cannot run Go {a.goarch} binaries"
        if m.level and a.level_var:
            fix = advice.build_for_model(name, model, "linux", a, m.level)
        else:
            fix = advice.no_level_for_model(name, model, a)
        return _fail("unsupported-cpu", f"{b.level_text} needs {a.goarch} {b.level}; {model} {runs}", fix,
                     profile=name, cpu=model)
    if (gap := _tcg_gap(a, model, b.level, name)) is not None:
        return gap
    return _prediction("ok", f"runs on {model}", f"{b.level_text} needs {a.goarch} {b.level}; {model} runs up to "
                       f"{a.goarch} {m.level}{note}", profile=name, cpu=model)


def _predict_machine(b: _Binary, name: str) -> dict[str, Any]:
    """A real machine (the catalogue): its features, not a model's, decide."""
    a = b.arch
    assert a is not None
    r = resolved_catalogue(name).get(a.goarch)
    if r is None:
        return _prediction(None, "no cell", f"{name} does not run {a.goarch} programs", profile=name, cpu=None)
    if not a.levels:
        return _prediction("ok", f"runs on {r.cpu}", f"{a.goarch} has no levels", profile=name, cpu=r.cpu)
    gap = level_gap(r, b.level) or ()
    top = machine_level(r)
    if gap:
        fix = advice.build_for_machine(name, r.cpu, "linux", a, top, gap)
        return _fail("unsupported-cpu", f"{b.level_text} needs {a.goarch} {b.level}; {r.cpu} runs up to "
                     f"{a.goarch} {top}", fix, profile=name, cpu=r.cpu)
    need = platforms.LEVEL_EXTENSIONS.get(a.goarch, {}).get(b.level or a.default_level or "", frozenset())
    if lacking := sorted(need & set(r.missing)):
        return _fail("emulation-unsupported", f"{name} has {', '.join(lacking)}, which qemu cannot give",
                     f"test {a.goarch} {b.level} on a real {name}", profile=name, cpu=r.cpu)
    return _prediction("ok", f"runs on {r.cpu}", f"{b.level_text} needs {a.goarch} {b.level}; {name} runs up "
                       f"to {a.goarch} {top}", profile=name, cpu=r.cpu)


def _tcg_gap(a: platforms.Arch, model: str, level: str | None, profile: str) -> dict[str, Any] | None:
    """emulation-unsupported when the model runs this level on hardware but qemu's TCG lacks what it needs."""
    m = a.model(model)
    if m is None or not m.tcg_gap or not m.level or not level or a.level_index(level) < a.level_index(m.level):
        return None
    return _fail("emulation-unsupported", f"{model} runs {a.goarch} {level} on real hardware, but qemu's TCG has "
                 f"no {m.tcg_gap}", f"test {a.goarch} {level} on real hardware (the host profile, where it "
                 "has the features)", profile=profile, cpu=model)


# --------------------------------------------------------------------------
# Public API


def explain(path: Path, images: Sequence[str] = DEFAULT_IMAGES, profiles: Sequence[str] = DEFAULT_PROFILES,
            *, store: ImageStore | None = None) -> dict[str, Any]:
    """Facts about the file at path and a predicted verdict per image and per profile (JSON-serialisable).

    ConfigError for a missing or unreadable file, an unknown image or profile. `store` is only read
    (a cached rootfs is preferred to the definition); nothing is built or downloaded.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            fh.read(1)
    except FileNotFoundError:
        raise ConfigError("no such file", file=str(p)) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a binary", file=str(p)) from None
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror or e}", file=str(p)) from None
    defs = load_definitions(store.definitions_dir if store else None)
    for img in images:
        if img not in defs:
            raise ConfigError(f"unknown image '{img}'; known: {', '.join(sorted(defs))}",
                              file="command line", key="--image")
    for prof in profiles:
        if not _known_profile(prof):
            raise ConfigError(f"unknown profile '{prof}'; known: {', '.join(BUILTIN_PROFILES)} "
                              "or a qemu CPU model name", file="command line", key="--profile")
    facts = inspect(p)
    b = _resolve(facts)
    out: dict[str, Any] = {"version": 1, "path": str(p), **_facts_section(b)}
    out["runnable"] = b.blocked is None
    out["images"], out["profiles"] = [], []
    if b.blocked is None and b.arch is not None:
        deb = b.arch.debian_arch(b.level)
        st = store if store is not None else ImageStore()
        suite = _host_suite()
        views = {n: _image_view(d, deb, None, suite) for n, d in defs.items()}
        providers = [n for n, v in views.items() if v and facts.interp and facts.interp in v.loaders]
        for img in images:
            view = _image_view(defs[img], deb, st, suite)
            out["images"].append(_predict_image(b, img, view, providers))
    else:
        out["images"] = [_predict_image(b, img, None, []) for img in images]
    out["profiles"] = [_predict_profile(b, prof) for prof in profiles]
    return out


def render_text(result: dict[str, Any]) -> str:
    """The console form of an explain() result."""
    lines = [f"{result['path']}: {result['description']}"]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label:<10} {text}")

    hdr = result["header"]
    if result["goos"] or result["goarch"]:
        row("platform", f"{result['goos'] or '?'}/{result['goarch'] or '?'}" + (
            f" (ELF {hdr['machine']} {hdr['class']}-bit {hdr['endian']}-endian, {hdr['osabi']})" if hdr else ""))
    go = result["go"]
    if go:
        bits = [go["version"]]
        if go["module"]:
            bits.append(f"module {go['module']}")
        if go["cgo_enabled"] is not None:
            bits.append(f"CGO_ENABLED={int(go['cgo_enabled'])}")
        if go["buildmode"]:
            bits.append(f"-buildmode={go['buildmode']}")
        if go["trimpath"]:
            bits.append("-trimpath")
        if go["tags"]:
            bits.append(f"-tags={','.join(go['tags'])}")
        if go["ldflags"]:
            bits.append(f"-ldflags={go['ldflags']!r}")
        if go["vcs"]:
            v = go["vcs"]
            bits.append(f"{v['system']} {(v['revision'] or '?')[:12]}" + (" (modified)" if v["modified"] else ""))
        row("go", ", ".join(bits))
    else:
        row("go", "no Go build info")
    isa = result["isa"]
    if isa["level"] or isa["x86_isa_needed"]:
        row("cpu level", f"{result['goarch']} {isa['level']} ({isa['how']})" + (
            f"; x86 ISA needed: {', '.join(isa['x86_isa_needed'])}" if isa["x86_isa_needed"] else ""))
    if result["format"] == "elf":
        if result["static"]:
            row("linking", "static (no PT_INTERP)")
        else:
            row("linking", f"dynamic: PT_INTERP {result['interp']}"
                + (f", NEEDED {', '.join(result['needed'])}" if result["needed"] else ", no NEEDED")
                + (f", needs GLIBC_{result['glibc_required']}" if result["glibc_required"] else ""))
    for w in result["warnings"]:
        row("warning", w)
    if not result["runnable"]:
        # One reason holds for every image and profile: say it once.
        first = (result["images"] + result["profiles"])[0]
        names = [pr["image"] for pr in result["images"]] + [pr["profile"] for pr in result["profiles"]]
        lines.append(f"{', '.join(names)}: {first['summary']} ({first['reason']})")
        return "\n".join(lines) + "\n"
    for title, key in (("images", "image"), ("profiles", "profile")):
        if result[title]:
            lines.append(title)
        for pr in result[title]:
            cpu = f" [{pr['cpu']}]" if key == "profile" and pr.get("cpu") and pr["verdict"] != "ok" else ""
            lines.append(f"  {pr[key]}{cpu}: {pr['summary']} ({pr['reason']})")
            if pr["fix"] and pr["verdict"] not in ("ok", "not-runnable"):
                lines.append(f"    fix: {pr['fix']}")
    return "\n".join(lines) + "\n"
