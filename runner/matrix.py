"""Load matrix.yaml and validate every key (errors name file:line and the key); runner/expand.py makes the Plan."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from . import paths, platforms, qemu_cpus
from .errors import ConfigError, RecipeError, read_text
from .expand import MatrixSpec, confine, expand
from .plan import (
    Expect,
    ImageSource,
    Limits,
    Plan,
    Profile,
    RunSpec,
    Target,
    builtin_profile,
    size_text,
)
from .profiles import BUILTIN_PROFILES, read_cpuinfo, resolve_machine
from .profiles.machine import from_cpu
from .yamlcheck import Validator, did_you_mean, kind_of, line_of

# builtin names a matrix may not redefine (the contract's); a later catalogue name a matrix already used
# for its own profile (`haswell`, `nehalem`, ...) stays the matrix's
RESERVED_PROFILES = ("baseline", "host", "pi-zero", "pi1", "pi2", "pi3", "pi4", "graviton2", "x86-64-v2-vm", "x86-64-v3")
DEFAULT_COMMAND = ("go", "build", "-trimpath", "-o", "{{ output }}", "{{ package }}")
DEFAULT_OUTPUT = "dist/{{ name }}-{{ os }}-{{ arch }}{{ variant_suffix }}{{ ext }}"
IMAGES_DIR = paths.images_dir()

_TOP_KEYS = ("name", "project", "package", "build", "targets", "images", "profiles", "run",
             "exclude", "xfail")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def known_images() -> list[str]:
    """Image names defined under images/ and their forms (`distroless-static:nonroot`); scratch always exists."""
    if not IMAGES_DIR.is_dir():
        return ["scratch"]
    try:
        from .rootfs.definitions import image_names, load_definitions
        names = set(image_names(load_definitions(IMAGES_DIR)))
    except RecipeError:     # a broken definition is reported where the image is built
        names = {p.stem for p in IMAGES_DIR.glob("*.yaml")}
    return sorted(names | {"scratch"})


def _machine_profile(v: Validator, name: str, x: CommentedMap, key: str, base_dir: Path) -> Profile:
    """{name, cpuinfo: FILE}: the machine a captured /proc/cpuinfo describes, as qemu CPUs per arch."""
    kline = line_of(x, "cpuinfo")
    rel = v.string(x["cpuinfo"], f"{key}.cpuinfo", kline)
    path = (base_dir / rel) if not Path(rel).is_absolute() else Path(rel)
    try:
        machine = resolve_machine(read_cpuinfo(path, rel))
    except ConfigError as e:
        raise v.d.err(str(e), f"{key}.cpuinfo", kline) from None
    for goarch, r in machine.items():
        _check_model(v, goarch, r.cpu.split(",")[0], f"{key}.cpuinfo", kline)
    return Profile.of_machine(name, machine, rel)


def _check_model(v: Validator, goarch: str, model: str, key: str, line: int | None) -> None:
    """A CPU model qemu does not know fails here, before anything is built (not as 64 failed cells)."""
    if platforms.arch(goarch).qemu is None:
        return
    names = qemu_cpus.models(goarch)
    if names is None or qemu_cpus.accepted(model, names):
        return      # no emulator here to ask: the preflight says what is missing
    close = qemu_cpus.closest(model, names)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise v.d.err(f"qemu-{platforms.arch(goarch).qemu}-static knows no CPU model '{model}'{hint} "
                  f"(all of them: `qemu-{platforms.arch(goarch).qemu}-static -cpu help`)", key, line)


def parse_target(spec: str, v: Validator, key: str, line: int | None) -> tuple[str, str, str | None]:
    """os/arch[/variant] -> parts, with errors that list what is valid."""
    parts = spec.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise v.d.err(f"'{spec}' is not os/arch[/variant] (e.g. linux/arm/v6)", key, line)
    os_, arch_ = parts[0], parts[1]
    variant = parts[2] if len(parts) == 3 else None
    if os_ not in platforms.OSES:
        raise v.d.err(f"unknown os '{os_}'{did_you_mean(os_, platforms.OSES)}; known: "
                      f"{', '.join(platforms.OSES)}", key, line)
    if arch_ not in platforms.ARCHES:
        raise v.d.err(f"unknown arch '{arch_}'{did_you_mean(arch_, platforms.ARCHES)}; known: "
                      f"{', '.join(platforms.ARCHES)}", key, line)
    facts = platforms.arch(arch_)
    if (arch_ == "wasm") != (os_ in ("js", "wasip1")):
        raise v.d.err(f"'{os_}/{arch_}' is not a Go platform (wasm pairs with js or wasip1)", key, line)
    if variant is not None and variant not in facts.levels:
        known = ", ".join(facts.levels) or "none (this arch has no variants)"
        raise v.d.err(f"unknown variant '{variant}' for {arch_}{did_you_mean(variant, facts.levels)}; "
                      f"known: {known}", key, line)
    return os_, arch_, variant


def load(path: str | Path, *, images: Collection[str] | None = None,
         prebuilt: Mapping[str, Path] | None = None) -> Plan:
    """Read, validate and expand a matrix file into a Plan. Raises ConfigError (exit 2).

    `prebuilt` (target spec -> artifact, e.g. from goreleaser) replaces the matrix's targets and
    builds: those files are checked and run as they are.
    """
    p = Path(path)
    file = str(path)
    text = read_text(path)
    yaml = YAML(typ="rt")
    try:
        doc = yaml.load(text)
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {e.problem or e.context}", file=file, line=line) from None
    except Exception as e:  # ruamel raises a few unmarked errors (duplicate keys carry marks above)
        raise ConfigError(f"invalid YAML: {e}", file=file) from None
    v = Validator(file)
    if doc is None:
        raise v.d.err("the file is empty; it needs at least name and targets", "", None)
    top = v.mapping(doc, "", 1, _TOP_KEYS)

    if "name" not in top:
        raise v.d.err("is required (used in artifact names)", "name", 1)
    name = v.string(top["name"], "name", line_of(top, "name"))
    if not _NAME_RE.match(name):
        raise v.d.err(f"'{name}' must be letters, digits, '.', '_' or '-'", "name", line_of(top, "name"))

    base_dir = p.resolve().parent
    project = base_dir
    if "project" in top:
        proj_s = v.string(top["project"], "project", line_of(top, "project"))
        project = (base_dir / proj_s).resolve()
        if not project.is_dir():
            raise v.d.err(f"'{proj_s}' is not a directory (resolved to {project})", "project",
                          line_of(top, "project"))
    package = "."
    if "package" in top:
        package = v.string(top["package"], "package", line_of(top, "package"))

    # build
    bnode = top.get("build") or CommentedMap()
    bline = line_of(top, "build")
    if "build" in top and top["build"] is not None:
        v.mapping(bnode, "build", bline, ("command", "env", "output", "reproducible", "before", "shell"))
    command: tuple[str, ...] | str = DEFAULT_COMMAND
    if "command" in bnode:
        command = v.command(bnode["command"], "build.command", line_of(bnode, "command"))
    benv = v.env(bnode.get("env"), "build.env", line_of(bnode, "env"))
    output_tpl = DEFAULT_OUTPUT
    if "output" in bnode:
        output_tpl = v.string(bnode["output"], "build.output", line_of(bnode, "output"))
    reproducible = v.boolean(bnode["reproducible"], "build.reproducible",
                             line_of(bnode, "reproducible")) if "reproducible" in bnode else False
    shell = v.boolean(bnode["shell"], "build.shell", line_of(bnode, "shell")) if "shell" in bnode else False
    before: list[tuple[str, ...] | str] = []
    if "before" in bnode and bnode["before"] is not None:
        bseq = v.seq(bnode["before"], "build.before", line_of(bnode, "before"))
        before = [v.command(c, f"build.before[{i}]", line_of(bseq, i)) for i, c in enumerate(bseq)]

    # targets
    if prebuilt is not None:
        seq = CommentedSeq(list(prebuilt))
        top["targets"] = seq
    if "targets" not in top:
        raise v.d.err("is required: a list such as [linux/amd64, linux/arm/v6]", "targets", 1)
    tseq = v.seq(top["targets"], "targets", line_of(top, "targets"))
    if not tseq:
        raise v.d.err("must name at least one target", "targets", line_of(top, "targets"))
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(tseq):
        key, line = f"targets[{i}]", line_of(tseq, i)
        env: dict[str, str] = {}
        cc = None
        libc = None
        artifact: Path | None = None
        if isinstance(item, CommentedMap):
            v.mapping(item, key, line, ("target", "env", "cc", "libc", "artifact"))
            if "target" not in item:
                raise v.d.err("needs 'target: os/arch[/variant]'", key, line)
            spec = v.string(item["target"], f"{key}.target", line_of(item, "target"))
            env = v.env(item.get("env"), f"{key}.env", line_of(item, "env"))
            if "cc" in item:
                cc = v.string(item["cc"], f"{key}.cc", line_of(item, "cc"))
                if cc != "zig":
                    raise v.d.err(f"unknown C cross compiler '{cc}'; supported: zig", f"{key}.cc",
                                  line_of(item, "cc"))
            if "libc" in item:
                libc = v.string(item["libc"], f"{key}.libc", line_of(item, "libc"))
                if cc != "zig":
                    raise v.d.err("needs cc: zig (it picks the C library zig links against)", f"{key}.libc",
                                  line_of(item, "libc"))
                if not re.match(r"^(musl|gnu(\.2\.\d+)?)$", libc):
                    raise v.d.err(f"'{libc}' is not musl, gnu or gnu.2.NN (e.g. gnu.2.17)", f"{key}.libc",
                                  line_of(item, "libc"))
            if "artifact" in item:
                rel = v.string(item["artifact"], f"{key}.artifact", line_of(item, "artifact"))
                artifact = (base_dir / rel).resolve()
                if not artifact.is_file():
                    raise v.d.err(f"no such file: {artifact} (a prebuilt binary, relative to the matrix file)",
                                  f"{key}.artifact", line_of(item, "artifact"))
                if cc is not None:
                    raise v.d.err("a prebuilt artifact is not built: drop cc (or artifact)", f"{key}.cc",
                                  line_of(item, "cc"))
        else:
            spec = v.string(item, key, line)
        os_, arch_, variant = parse_target(spec, v, key, line)
        if spec in seen:
            raise v.d.err(f"'{spec}' is listed twice (also targets[{seen[spec]}])", key, line)
        seen[spec] = i
        targets.append(Target(spec, os_, arch_, variant, env, cc, line, libc, artifact))

    # images: a builtin name, or {name, from} for an image from elsewhere (contract §7)
    # the image definitions are parsed only when a name is not scratch (a scratch-only matrix never reads them)
    known_list: list[list[str]] = [list(images)] if images is not None else []

    def known() -> list[str]:
        if not known_list:
            known_list.append(known_images())
        return known_list[0]

    img_names = ["scratch"]
    sources: dict[str, ImageSource] = {}
    if "images" in top:
        iseq = v.seq(top["images"], "images", line_of(top, "images"))
        img_names = []
        for i, x in enumerate(iseq):
            key, line = f"images[{i}]", line_of(iseq, i)
            if isinstance(x, CommentedMap):
                src = _image_source(v, x, key, line, base_dir, known())
                s = src.name
                sources[s] = src
            else:
                s = v.string(x, key, line)
                if s != "scratch" and s not in known():
                    raise v.d.err(f"unknown image '{s}'{did_you_mean(s, known())}; known: {', '.join(known())}, "
                                  "or a mapping {name: ..., from: \"docker-archive:FILE\"}", key, line)
            if s in img_names:
                raise v.d.err(f"'{s}' is listed twice", key, line)
            img_names.append(s)
        if not img_names:
            raise v.d.err("must name at least one image", "images", line_of(top, "images"))

    # profiles
    profiles: list[Profile] = [Profile("baseline", builtin=True)]
    if "profiles" in top:
        pseq = v.seq(top["profiles"], "profiles", line_of(top, "profiles"))
        profiles = []
        for i, x in enumerate(pseq):
            key, line = f"profiles[{i}]", line_of(pseq, i)
            if isinstance(x, CommentedMap):
                v.mapping(x, key, line, ("name", "cpu", "cpuinfo"))
                if "name" not in x:
                    raise v.d.err("needs a name", key, line)
                pname = v.string(x["name"], f"{key}.name", line_of(x, "name"))
                if pname in RESERVED_PROFILES:
                    raise v.d.err(f"'{pname}' is a builtin profile; pick another name", f"{key}.name",
                                  line_of(x, "name"))
                if "cpuinfo" in x:
                    if "cpu" in x:
                        raise v.d.err("give cpu or cpuinfo, not both", f"{key}.cpu", line_of(x, "cpu"))
                    prof = _machine_profile(v, pname, x, key, base_dir)
                else:
                    if "cpu" not in x:
                        raise v.d.err("needs cpu: {arch: qemu model}, e.g. {amd64: Westmere}, or cpuinfo: FILE "
                                      "(a captured /proc/cpuinfo)", key, line)
                    cnode = v.mapping(x["cpu"], f"{key}.cpu", line_of(x, "cpu"), list(platforms.ARCHES))
                    cpu = {str(a): v.string(m, f"{key}.cpu.{a}", line_of(cnode, a)) for a, m in cnode.items()}
                    machine = {}
                    for goarch, cpu_model in cpu.items():
                        _check_model(v, goarch, cpu_model, f"{key}.cpu.{goarch}", line_of(cnode, goarch))
                        if (r := from_cpu(goarch, cpu_model)) is not None:     # toggles: what they need added
                            machine[goarch] = r
                            cpu[goarch] = r.cpu
                    prof = Profile(pname, cpu, machine=machine, source="cpu" if machine else None)
            else:
                pname = v.string(x, key, line)
                if pname not in BUILTIN_PROFILES:
                    raise v.d.err(f"unknown profile '{pname}'{did_you_mean(pname, BUILTIN_PROFILES)};"
                                  f" builtin: {', '.join(BUILTIN_PROFILES)}, or a mapping "
                                  "{name: ..., cpu: {arch: model}}", key, line)
                prof = builtin_profile(pname)
            if any(p.name == prof.name for p in profiles):
                raise v.d.err(f"'{prof.name}' is listed twice", key, line)
            profiles.append(prof)

    # run
    run = RunSpec()
    notes: list[str] = []
    if "run" in top and top["run"] is not None:
        rnode = v.mapping(top["run"], "run", line_of(top, "run"),
                          ("args", "env", "stdin", "stdin_file", "timeout", "expect", "limits"))
        args: tuple[str, ...] = ()
        if "args" in rnode:
            a = v.command(rnode["args"], "run.args", line_of(rnode, "args")) if rnode["args"] else ()
            args = tuple(shlex.split(a)) if isinstance(a, str) else a
        renv = v.env(rnode.get("env"), "run.env", line_of(rnode, "env"))
        stdin: str | bytes | None = None
        if rnode.get("stdin") is not None:
            stdin = v.string(rnode["stdin"], "run.stdin", line_of(rnode, "stdin"), allow_empty=True)
            if (hint := _stdin_names_a_file(v, stdin, line_of(rnode, "stdin"), (base_dir, project))) is not None:
                notes.append(hint)
        if rnode.get("stdin_file") is not None:
            if stdin is not None:
                raise v.d.err("give stdin (inline text) or stdin_file (a file's bytes), not both",
                              "run.stdin_file", line_of(rnode, "stdin_file"))
            stdin = _stdin_file(v, rnode["stdin_file"], line_of(rnode, "stdin_file"), (base_dir, project))
        timeout = 60.0
        if "timeout" in rnode:
            t = rnode["timeout"]
            if isinstance(t, bool) or not isinstance(t, int | float) or t <= 0:
                raise v.d.err(f"must be a positive number of seconds, got {kind_of(t)}", "run.timeout",
                              line_of(rnode, "timeout"))
            timeout = float(t)
        expect = Expect()
        if "expect" in rnode and rnode["expect"] is not None:
            enode = v.mapping(rnode["expect"], "run.expect", line_of(rnode, "expect"), ("exit", "stdout"))
            ex = 0
            if "exit" in enode:
                st = enode["exit"]
                if isinstance(st, bool) or not isinstance(st, int) or not 0 <= st <= 255:
                    raise v.d.err(f"must be an exit status 0..255, got {kind_of(st)}", "run.expect.exit",
                                  line_of(enode, "exit"))
                ex = st
            pat = None
            if enode.get("stdout") is not None:
                pat = v.string(enode["stdout"], "run.expect.stdout", line_of(enode, "stdout"), allow_empty=True)
                try:
                    re.compile(pat)
                except re.error as err:
                    raise v.d.err(f"invalid regular expression {pat!r}: {err}", "run.expect.stdout",
                                  line_of(enode, "stdout")) from None
            expect = Expect(ex, pat)
        limits = Limits()
        if rnode.get("limits") is not None:
            limits = _limits(v, rnode["limits"], line_of(rnode, "limits"))
        run = RunSpec(args, renv, stdin, timeout, expect, limits)

    mspec = MatrixSpec(path=p, v=v, top=top, name=name, project=project, base_dir=base_dir, package=package,
                      bnode=bnode, bline=bline, command=command, benv=benv, output_tpl=output_tpl,
                      reproducible=reproducible, shell=shell, before=before, targets=targets,
                      images=img_names, profiles=profiles, run=run, prebuilt=prebuilt, image_sources=sources,
                      notes=tuple(notes))
    return expand(mspec)


def _stdin_file(v: Validator, node: Any, line: int | None, roots: tuple[Path, Path]) -> bytes:
    """run.stdin_file: the bytes of a regular file, relative to the matrix file and confined like outputs."""
    rel = v.string(node, "run.stdin_file", line)
    path = (roots[0] / rel).resolve()
    confine(v, path, rel, roots, "run.stdin_file", line, verb="reads", what="stdin files")
    if not path.is_file():
        why = "a directory" if path.is_dir() else "not a regular file" if path.exists() else "no such file"
        raise v.d.err(f"{why}: {path} (the file whose bytes the cells read, relative to the matrix file)",
                      "run.stdin_file", line)
    try:
        return path.read_bytes()
    except OSError as e:
        raise v.d.err(f"cannot read {path}: {e.strerror or e}", "run.stdin_file", line) from None


def _stdin_names_a_file(v: Validator, text: str, line: int | None, roots: tuple[Path, Path]) -> str | None:
    """The hint for `stdin: fixture.txt`: one line of inline text that names an existing file is fed as text."""
    name = text.strip()
    if not name or "\n" in name or len(name) > 4096:
        return None
    for root in roots:
        try:
            path = (root / name).resolve()
            found = path.is_file()
        except (OSError, ValueError):       # a name no file can have (NUL, too long)
            continue
        if found:
            rel = os.path.relpath(path, roots[0])
            return (f"warning: run.stdin ({v.d.file}:{line}) is the text {name!r}, which names the file {path}: "
                    f"the cells read those {len(text)} characters, not the file; to feed the file's bytes, "
                    f"write `stdin_file: {rel}` instead")
    return None


def _image_source(v: Validator, x: CommentedMap, key: str, line: int | None, base_dir: Path,
                  known: list[str]) -> ImageSource:
    """One `{name, from}` image entry, its source checked to exist (paths relative to the matrix)."""
    from .rootfs.external import ImageSourceError, parse_source

    v.mapping(x, key, line, ("name", "from"))
    for k in ("name", "from"):
        if k not in x:
            raise v.d.err(f"needs {k}: e.g. {{name: runtime, from: \"docker-archive:images/runtime.tar\"}}", key, line)
    name = v.string(x["name"], f"{key}.name", line_of(x, "name"))
    if name in known or name == "none":
        raise v.d.err(f"'{name}' is a builtin image; give yours another name", f"{key}.name", line_of(x, "name"))
    if not re.match(r"^[a-z0-9][a-z0-9._-]*$", name):
        raise v.d.err(f"'{name}' is not a valid image name (lower-case letters, digits, '.', '_', '-')",
                      f"{key}.name", line_of(x, "name"))
    text = v.string(x["from"], f"{key}.from", line_of(x, "from"))
    try:
        kind, loc = parse_source(text)
    except ImageSourceError as e:
        raise v.d.err(e.detail, f"{key}.from", line_of(x, "from")) from None
    if kind != "docker":
        path = (base_dir / loc).resolve()
        if not path.exists():
            raise v.d.err(f"no such {'directory' if kind in ('oci', 'dir') else 'file'}: {path} "
                          "(relative to the matrix file)", f"{key}.from", line_of(x, "from"))
        loc = str(path)
    return ImageSource(name, kind, loc, text, line_of(x, "from"))


_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)i?b?\s*$", re.I)
_LIMIT_MIN = {"memory": 32 << 20, "pids": 16, "output": 4 << 10}


def parse_size(value: Any) -> int | None:
    """2g, 512m, 64k, 4096 (bytes; binary units as docker's --memory takes them) -> bytes, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str) or not (m := _SIZE_RE.match(value)):
        return None
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]


def _limits(v: Validator, node: Any, line: int | None) -> Limits:
    m = v.mapping(node, "run.limits", line, ("memory", "pids", "output"))
    out: dict[str, int] = {}
    for key in ("memory", "pids", "output"):
        if key not in m:
            continue
        k, kl = f"run.limits.{key}", line_of(m, key)
        raw = m[key]
        n = (raw if isinstance(raw, int) and not isinstance(raw, bool) else None) if key == "pids" else parse_size(raw)
        if n is None:
            want = "a whole number" if key == "pids" else "a size such as 2g, 512m or 65536 (bytes)"
            raise v.d.err(f"must be {want}, got {kind_of(raw)}", k, kl)
        if n < _LIMIT_MIN[key]:
            raise v.d.err(f"{raw!r} is below the least a cell needs ({_LIMIT_MIN[key] if key == 'pids' else size_text(_LIMIT_MIN[key])}): "
                          "qemu and the Go runtime start several threads and map memory before main",
                          k, kl)
        out[key] = n
    return Limits(**out)


