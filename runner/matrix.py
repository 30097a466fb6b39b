"""Load matrix.yaml, validate every key (errors name file:line and the key), expand into a Plan."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import sys
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from . import paths, platforms, qemu_cpus
from .errors import ConfigError, read_text
from .model import CELL_VERDICTS
from .plan import (
    REPRO_OUTPUT,
    BuildJob,
    Cell,
    Expect,
    Limits,
    Plan,
    Profile,
    RunSpec,
    Target,
    builtin_profile,
    size_text,
)
from .toolchain import zig_cpu_flags, zig_triple
from .yamlcheck import did_you_mean, kind_of, line_of, unknown_key

DEFAULT_COMMAND = ("go", "build", "-trimpath", "-o", "{{ output }}", "{{ package }}")
DEFAULT_OUTPUT = "dist/{{ name }}-{{ os }}-{{ arch }}{{ variant_suffix }}{{ ext }}"
IMAGES_DIR = paths.images_dir()

_TOP_KEYS = ("name", "project", "package", "build", "targets", "images", "profiles", "run",
             "exclude", "xfail")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def known_images() -> list[str]:
    """Image names defined under images/ (scratch always exists)."""
    names = {p.stem for p in IMAGES_DIR.glob("*.yaml")} if IMAGES_DIR.is_dir() else set()
    return sorted(names | {"scratch"})


class _Doc:
    """Error helper: turns a ruamel node position into file:line for a key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def err(self, msg: str, key: str, line: int | None) -> ConfigError:
        return ConfigError(msg, file=self.file, line=line, key=key)


class _Validator:
    def __init__(self, file: str) -> None:
        self.d = _Doc(file)

    def at(self, key: str, line: int | None) -> Callable[[str], ConfigError]:
        """An error factory for one key, for errors found later (e.g. while rendering)."""
        return lambda msg: self.d.err(msg, key, line)

    def mapping(self, node: Any, key: str, line: int | None, allowed: Collection[str]) -> CommentedMap:
        if not isinstance(node, CommentedMap):
            raise self.d.err(f"must be a mapping, got {kind_of(node)}", key, line)
        for k in node:
            if k not in allowed:
                raise self.d.err(unknown_key(str(k), allowed),
                                 f"{key}.{k}" if key else str(k), line_of(node, k))
        return node

    def seq(self, node: Any, key: str, line: int | None) -> CommentedSeq:
        if not isinstance(node, CommentedSeq):
            raise self.d.err(f"must be a list, got {kind_of(node)}", key, line)
        return node

    def string(self, node: Any, key: str, line: int | None, *, allow_empty: bool = False) -> str:
        if not isinstance(node, str):
            raise self.d.err(f"must be a string, got {kind_of(node)}", key, line)
        if not allow_empty and not node.strip():
            raise self.d.err("must not be empty", key, line)
        return node

    def env(self, node: Any, key: str, line: int | None) -> dict[str, str]:
        if node is None:
            return {}
        if not isinstance(node, CommentedMap):
            raise self.d.err(f"must be a mapping of NAME: value, got {kind_of(node)}", key, line)
        out: dict[str, str] = {}
        for k, v in node.items():
            kl = line_of(node, k)
            if not isinstance(k, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k):
                raise self.d.err("is not a valid environment variable name", f"{key}.{k}", kl)
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise self.d.err(f"must be a string (quote it), got {kind_of(v)}", f"{key}.{k}", kl)
            out[k] = str(v)
        return out

    def command(self, node: Any, key: str, line: int | None) -> tuple[str, ...] | str:
        if isinstance(node, str):
            if not node.strip():
                raise self.d.err("must not be empty", key, line)
            return node
        seq = self.seq(node, key, line)
        if not seq:
            raise self.d.err("must not be empty", key, line)
        return tuple(self.string(x, f"{key}[{i}]", line_of(seq, i), allow_empty=True)
                     for i, x in enumerate(seq))

    def boolean(self, node: Any, key: str, line: int | None) -> bool:
        if not isinstance(node, bool):
            raise self.d.err(f"must be true or false, got {kind_of(node)}", key, line)
        return node


def _check_model(v: _Validator, goarch: str, model: str, key: str, line: int | None) -> None:
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


def parse_target(spec: str, v: _Validator, key: str, line: int | None) -> tuple[str, str, str | None]:
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


def _render_env() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                keep_trailing_newline=True)


def render(tpl: str, ctx: Mapping[str, Any], err: Callable[[str], ConfigError]) -> str:
    """Render one template in the sandbox; any failure becomes a ConfigError at its key."""
    try:
        return _render_env().from_string(tpl).render(**ctx)
    except jinja2.UndefinedError as e:
        raise err(f"template {tpl!r}: {e.message}; available: name, os, arch, variant, "
                  "variant_suffix, ext, target, output, package") from None
    except jinja2.TemplateError as e:
        raise err(f"template {tpl!r}: {e}") from None


def target_vars(name: str, t: Target, package: str) -> dict[str, str]:
    return {"name": name, "os": t.os, "arch": t.arch, "variant": t.variant or "",
            "variant_suffix": f"-{t.variant}" if t.variant else "",
            "ext": platforms.OSES[t.os].ext, "target": t.spec, "package": package}


def build_env(t: Target, base: Mapping[str, str]) -> dict[str, str]:
    """The env xrun sets for a build: defaults < build.env < the target's platform < target env."""
    env = {"CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
    env.update(base)
    env["GOOS"] = t.os
    env["GOARCH"] = t.arch
    facts = t.facts
    for a in platforms.ARCHES.values():     # never inherit another arch's level from the caller
        if a.level_var:
            env[a.level_var] = ""
    if facts.level_var and t.variant:
        env[facts.level_var] = facts.env_value(t.variant)
    if t.cc == "zig":
        zig = f"{shlex.quote(sys.executable)} -m ziglang"
        triple = zig_triple(t.arch, t.variant, t.libc)
        flags = zig_cpu_flags(t.arch, t.variant)
        env["CC"] = f"{zig} cc -target {triple} {flags}".strip()
        env["CXX"] = f"{zig} c++ -target {triple} {flags}".strip()
    env.update(t.env)
    return env


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
    v = _Validator(file)
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
        if isinstance(item, CommentedMap):
            v.mapping(item, key, line, ("target", "env", "cc", "libc"))
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
        else:
            spec = v.string(item, key, line)
        os_, arch_, variant = parse_target(spec, v, key, line)
        if spec in seen:
            raise v.d.err(f"'{spec}' is listed twice (also targets[{seen[spec]}])", key, line)
        seen[spec] = i
        targets.append(Target(spec, os_, arch_, variant, env, cc, line, libc))

    # images
    known = list(images) if images is not None else known_images()
    img_names = ["scratch"]
    if "images" in top:
        iseq = v.seq(top["images"], "images", line_of(top, "images"))
        img_names = []
        for i, x in enumerate(iseq):
            s = v.string(x, f"images[{i}]", line_of(iseq, i))
            if s not in known:
                raise v.d.err(f"unknown image '{s}'{did_you_mean(s, known)}; known: {', '.join(known)}",
                              f"images[{i}]", line_of(iseq, i))
            if s in img_names:
                raise v.d.err(f"'{s}' is listed twice", f"images[{i}]", line_of(iseq, i))
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
                v.mapping(x, key, line, ("name", "cpu"))
                if "name" not in x:
                    raise v.d.err("needs a name", key, line)
                pname = v.string(x["name"], f"{key}.name", line_of(x, "name"))
                if pname in platforms.BUILTIN_PROFILES:
                    raise v.d.err(f"'{pname}' is a builtin profile; pick another name", f"{key}.name",
                                  line_of(x, "name"))
                if "cpu" not in x:
                    raise v.d.err("needs cpu: {arch: qemu model}, e.g. {amd64: Westmere}", key, line)
                cnode = v.mapping(x["cpu"], f"{key}.cpu", line_of(x, "cpu"), list(platforms.ARCHES))
                cpu = {str(a): v.string(m, f"{key}.cpu.{a}", line_of(cnode, a)) for a, m in cnode.items()}
                for goarch, cpu_model in cpu.items():
                    _check_model(v, goarch, cpu_model, f"{key}.cpu.{goarch}", line_of(cnode, goarch))
                prof = Profile(pname, cpu)
            else:
                pname = v.string(x, key, line)
                if pname not in platforms.BUILTIN_PROFILES:
                    raise v.d.err(f"unknown profile '{pname}'{did_you_mean(pname, platforms.BUILTIN_PROFILES)};"
                                  f" builtin: {', '.join(platforms.BUILTIN_PROFILES)}, or a mapping "
                                  "{name: ..., cpu: {arch: model}}", key, line)
                prof = builtin_profile(pname)
            if any(p.name == prof.name for p in profiles):
                raise v.d.err(f"'{prof.name}' is listed twice", key, line)
            profiles.append(prof)

    # run
    run = RunSpec()
    if "run" in top and top["run"] is not None:
        rnode = v.mapping(top["run"], "run", line_of(top, "run"),
                          ("args", "env", "stdin", "timeout", "expect", "limits"))
        args: tuple[str, ...] = ()
        if "args" in rnode:
            a = v.command(rnode["args"], "run.args", line_of(rnode, "args")) if rnode["args"] else ()
            args = tuple(shlex.split(a)) if isinstance(a, str) else a
        renv = v.env(rnode.get("env"), "run.env", line_of(rnode, "env"))
        stdin = None
        if rnode.get("stdin") is not None:
            stdin = v.string(rnode["stdin"], "run.stdin", line_of(rnode, "stdin"), allow_empty=True)
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

    # builds: render command and output per target; catch two targets writing one file (seed bug 6)
    builds: list[BuildJob] = []
    outputs: dict[Path, Target] = {}
    for t in targets:
        ctx = target_vars(name, t, package)
        out_key = "build.output" if "output" in bnode else "build.output (default)"
        out_line = line_of(bnode, "output") if "output" in bnode else t.line
        rel = render(output_tpl, ctx, v.at(out_key, out_line)).strip()
        if not rel:
            raise v.d.err(f"renders to an empty path for {t.spec}", out_key, out_line)
        out = (project / rel).resolve()
        _confine(v, out, rel, (project, base_dir), out_key, out_line)
        if out in outputs:
            other = outputs[out]
            raise v.d.err(
                f"targets '{other.spec}' (line {other.line}) and '{t.spec}' (line {t.line}) both write "
                f"'{rel}': the template {output_tpl!r} does not tell them apart, so one artifact would "
                "overwrite the other; put {{ os }}-{{ arch }}{{ variant_suffix }}{{ ext }} in it",
                out_key, out_line)
        outputs[out] = t
        ctx["output"] = rel
        ckey, cline = "build.command", line_of(bnode, "command") if "command" in bnode else bline
        if isinstance(command, str):
            rendered = render(command, ctx, v.at(ckey, cline))
            argv: tuple[str, ...] = (rendered,) if shell else tuple(shlex.split(rendered))
        else:
            argv = tuple(render(c, ctx, v.at(ckey, cline)) for c in command)
        env = build_env(t, {k: render(val, ctx, v.at(f"build.env.{k}", line_of(bnode, "env")))
                            for k, val in benv.items()})
        pre: list[tuple[str, ...]] = []
        for i, c in enumerate(before):
            bk, bl = f"build.before[{i}]", line_of(bnode, "before")
            if isinstance(c, str):
                r = render(c, ctx, v.at(bk, bl))
                pre.append((r,) if shell else tuple(shlex.split(r)))
            else:
                pre.append(tuple(render(x, ctx, v.at(bk, bl)) for x in c))
        repro: tuple[str, ...] = ()
        if reproducible:
            rctx = {**ctx, "output": REPRO_OUTPUT}
            if isinstance(command, str):
                rr = render(command, rctx, v.at(ckey, cline))
                repro = (rr,) if shell else tuple(shlex.split(rr))
            else:
                repro = tuple(render(c, rctx, v.at(ckey, cline)) for c in command)
            if REPRO_OUTPUT not in " ".join(repro):
                raise v.d.err("build.reproducible needs the command to write to {{ output }}", ckey, cline)
        if prebuilt is not None:
            art = Path(prebuilt[t.spec]).resolve()
            builds.append(BuildJob(t, (), False, env, (), art, str(art), project, False, (), prebuilt=True))
            continue
        builds.append(BuildJob(t, argv, shell and isinstance(command, str), env, tuple(pre), out, rel,
                               project, reproducible, repro))

    # cells
    cells: list[Cell] = []
    for t in targets:
        ctx = target_vars(name, t, package)
        ctx["output"] = next(b.output_rel for b in builds if b.target is t)
        rline = line_of(top, "run")
        rargs = tuple(render(a, ctx, v.at("run.args", rline)) for a in run.args)
        renv = {k: render(val, ctx, v.at(f"run.env.{k}", rline)) for k, val in run.env.items()}
        if not t.runnable or platforms.OSES[t.os].runner:     # no image or CPU axis off Linux
            cells.append(Cell(t, "none", Profile("none", builtin=True), "", rargs, renv))
            continue
        for img in img_names:
            for prof in profiles:
                model = prof.model_for(t)
                if model is None:
                    continue
                cells.append(Cell(t, img, prof, model, rargs, renv))

    cells = _apply_exclude(top, v, cells)
    cells = _apply_xfail(top, v, cells)
    return Plan(p, name, project, tuple(builds), tuple(cells), run,
                {t.spec: t.line or 1 for t in targets})


def _confine(v: _Validator, out: Path, rel: str, roots: tuple[Path, ...], key: str, line: int | None) -> None:
    """A path the matrix writes must stay in the project (or the matrix's directory) after symlinks."""
    if any(out.is_relative_to(r) for r in roots):
        return
    lexical = Path(os.path.normpath(roots[0] / rel))
    via = (f" (a symlink on the way: {lexical} resolves to {out})"
           if any(lexical.is_relative_to(r) for r in roots) else "")
    shown = " or ".join(dict.fromkeys(str(r) for r in roots))
    raise v.d.err(f"'{rel}' writes outside the project: {out}{via}; artifacts must stay under {shown}",
                  key, line)


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


def _limits(v: _Validator, node: Any, line: int | None) -> Limits:
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


def _selector(node: Any, v: _Validator, key: str, line: int | None,
              extra: Collection[str] = ()) -> dict[str, str]:
    m = v.mapping(node, key, line, ("target", "image", "profile", *extra))
    sel = {k: v.string(m[k], f"{key}.{k}", line_of(m, k)) for k in ("target", "image", "profile") if k in m}
    if not sel:
        raise v.d.err("needs at least one of target, image, profile", key, line)
    return sel


def _matches(sel: Mapping[str, str], c: Cell) -> bool:
    vals = {"target": c.target.spec, "image": c.image, "profile": c.profile.name}
    return all(fnmatch.fnmatchcase(vals[k], pat) for k, pat in sel.items())


def _apply_exclude(top: CommentedMap, v: _Validator, cells: list[Cell]) -> list[Cell]:
    if top.get("exclude") is None:
        return cells
    seq = v.seq(top["exclude"], "exclude", line_of(top, "exclude"))
    for i, node in enumerate(seq):
        sel = _selector(node, v, f"exclude[{i}]", line_of(seq, i))
        if not any(_matches(sel, c) for c in cells):
            raise v.d.err(f"{dict(sel)} matches no cell (a typo?)", f"exclude[{i}]", line_of(seq, i))
        cells = [c for c in cells if not _matches(sel, c)]
    return cells


def _apply_xfail(top: CommentedMap, v: _Validator, cells: list[Cell]) -> list[Cell]:
    if top.get("xfail") is None:
        return cells
    seq = v.seq(top["xfail"], "xfail", line_of(top, "xfail"))
    out = list(cells)
    for i, node in enumerate(seq):
        key, line = f"xfail[{i}]", line_of(seq, i)
        sel = _selector(node, v, key, line, extra=("verdict",))
        if "verdict" not in node:
            raise v.d.err(f"needs the verdict the cells must produce, one of: {', '.join(CELL_VERDICTS[1:])}",
                          key, line)
        verdict = v.string(node["verdict"], f"{key}.verdict", line_of(node, "verdict"))
        if verdict not in CELL_VERDICTS or verdict == "ok":
            raise v.d.err(f"unknown verdict '{verdict}'{did_you_mean(verdict, CELL_VERDICTS)}; one of: "
                          f"{', '.join(CELL_VERDICTS[1:])}", f"{key}.verdict", line_of(node, "verdict"))
        hit = False
        for j, c in enumerate(out):
            if _matches(sel, c):
                out[j] = Cell(c.target, c.image, c.profile, c.cpu, c.args, c.env, verdict)
                hit = True
        if not hit:
            raise v.d.err(f"{dict(sel)} matches no cell (a typo, or excluded?)", key, line)
    return out


def parse_only(s: str) -> tuple[str, str]:
    """A --only KEY=GLOB selector (KEY: target, image or profile)."""
    key, sep, glob = s.partition("=")
    if not sep or key not in ("target", "image", "profile") or not glob:
        raise ConfigError(f"'{s}' is not KEY=GLOB with KEY one of target, image, profile")
    return key, glob


def select(plan: Plan, only: Collection[tuple[str, str]] = (), shard: tuple[int, int] | None = None) -> Plan:
    """Narrow the plan to cells matching every --only KEY=GLOB, then to one shard."""
    cells = [c for c in plan.cells
             if all(fnmatch.fnmatchcase({"target": c.target.spec, "image": c.image,
                                         "profile": c.profile.name}[k], g) for k, g in only)]
    if shard is not None:
        i, n = shard
        cells = [c for k, c in enumerate(sorted(cells, key=lambda c: c.id)) if k % n == i - 1]
    targets = {c.target.spec for c in cells}
    builds = tuple(b for b in plan.builds if b.target.spec in targets)
    return Plan(plan.matrix_path, plan.name, plan.project, builds, tuple(cells), plan.run, plan.target_lines)
