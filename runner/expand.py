"""Expand a validated matrix into a Plan: render each target's command and output in the jinja2
sandbox, take the product target x image x profile, apply exclude and xfail; select for --only/--shard.

Parsing (runner/matrix.py) checks what the file says, key by key; this module decides what it means.
Errors found here (a template that does not render, two targets writing one file, an output outside
the project) still name the file, line and key: the spec carries the validator and the YAML nodes.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import shlex
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from ruamel.yaml.comments import CommentedMap

from . import platforms
from .errors import ConfigError
from .model import CELL_VERDICTS
from .plan import REPRO_OUTPUT, BuildJob, Cell, ImageSource, Plan, Profile, RunSpec, Target
from .toolchain import zig_cpu_flags, zig_triple
from .yamlcheck import Validator, did_you_mean, line_of

Platform = tuple[str, str, str | None]     # (os, OCI arch, variant), as rootfs.external reads them


@dataclass(frozen=True, kw_only=True)
class MatrixSpec:
    """What matrix.yaml says, validated, before expansion (with the nodes later errors point at)."""

    path: Path
    v: Validator
    top: CommentedMap
    name: str
    project: Path
    base_dir: Path
    package: str
    bnode: Any
    bline: int | None
    command: tuple[str, ...] | str
    benv: Mapping[str, str]
    output_tpl: str
    reproducible: bool
    shell: bool
    before: list[tuple[str, ...] | str]
    targets: list[Target]
    images: list[str]
    profiles: list[Profile]
    run: RunSpec
    prebuilt: Mapping[str, Path] | None
    image_sources: Mapping[str, ImageSource] = field(default_factory=dict)
    notes: tuple[str, ...] = ()     # found while reading (e.g. an inline stdin that names a file)


def expand(spec: MatrixSpec) -> Plan:
    """The plan: one build per target, the cells, exclude and xfail applied."""
    v, top, name, project, base_dir, package = spec.v, spec.top, spec.name, spec.project, spec.base_dir, spec.package
    bnode, bline, command, benv, output_tpl = spec.bnode, spec.bline, spec.command, spec.benv, spec.output_tpl
    reproducible, shell, before, targets, run = spec.reproducible, spec.shell, spec.before, spec.targets, spec.run
    img_names, profiles, prebuilt, p = spec.images, spec.profiles, spec.prebuilt, spec.path
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
        confine(v, out, rel, (project, base_dir), out_key, out_line)
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
        if prebuilt is not None or t.artifact is not None:
            art = t.artifact if t.artifact is not None else Path((prebuilt or {})[t.spec]).resolve()
            builds.append(BuildJob(t, (), False, env, (), art, str(art), project, False, (), prebuilt=True))
            continue
        builds.append(BuildJob(t, argv, shell and isinstance(command, str), env, tuple(pre), out, rel,
                               project, reproducible, repro, matrix_dir=base_dir))

    # cells; an image from elsewhere makes cells only for the platforms it offers (contract §7)
    cells: list[Cell] = []
    notes: list[str] = list(spec.notes)
    offered = _offered_platforms(v, spec.image_sources)
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
            if img in offered and offered[img] and (why := _not_offered(t, offered[img])) is not None:
                notes.append(f"{t.spec} x {img}: left out, {why} ({spec.image_sources[img].text})")
                continue
            for prof in profiles:
                model = prof.model_for(t)
                if model is None:
                    continue
                cells.append(Cell(t, img, prof, model, rargs, renv))

    cells = _apply_exclude(top, v, cells)
    cells = _apply_xfail(top, v, cells)
    return Plan(p, name, project, tuple(builds), tuple(cells), run,
                {t.spec: t.line or 1 for t in targets}, dict(spec.image_sources), tuple(notes))


def _offered_platforms(v: Validator, sources: Mapping[str, ImageSource]) -> dict[str, list[Platform]]:
    """The (os, arch, variant) platforms each image from elsewhere offers ([]: a bare root filesystem,
    or an image in the daemon, which docker itself resolves)."""
    from .rootfs.external import ImageSourceError, platforms_of

    out: dict[str, list[Platform]] = {}
    for name, src in sources.items():
        if src.kind == "docker":
            from .rootfs.daemon import platforms
            out[name] = platforms(src.location)
            continue
        try:
            out[name] = platforms_of(src.kind, src.path)
        except ImageSourceError as e:
            raise v.d.err(e.detail, f"images[{name}].from", src.line) from None
    return out


def _not_offered(t: Target, offered: list[Platform]) -> str | None:
    """Why an image's platforms have none for this target (None: one matches), as unpack() chooses."""
    from .rootfs.external import matching

    a = t.facts
    want = (t.os, a.oci, a.oci_variant(t.level))
    if matching(offered, want):
        return None
    offers = ", ".join(sorted("/".join(x for x in p if x) for p in offered))
    return f"the image offers only {offers}, not {'/'.join(x for x in want if x)}"


@functools.lru_cache(maxsize=1)
def _render_env() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                keep_trailing_newline=True)


@functools.lru_cache(maxsize=256)
def _compiled(tpl: str) -> jinja2.Template:
    """A template compiled once per process: cells share their matrix's few templates."""
    return _render_env().from_string(tpl)


def render(tpl: str, ctx: Mapping[str, Any], err: Callable[[str], ConfigError]) -> str:
    """Render one template in the sandbox; any failure becomes a ConfigError at its key."""
    if "{" not in tpl:
        return tpl              # no template syntax: nothing to render (most args and env values)
    try:
        return _compiled(tpl).render(**ctx)
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


def confine(v: Validator, out: Path, rel: str, roots: tuple[Path, ...], key: str, line: int | None, *,
            verb: str = "writes", what: str = "artifacts") -> None:
    """A path the matrix writes (or reads) must stay in the project (or the matrix's directory) after symlinks."""
    if any(out.is_relative_to(r) for r in roots):
        return
    lexical = Path(os.path.normpath(roots[0] / rel))
    via = (f" (a symlink on the way: {lexical} resolves to {out})"
           if any(lexical.is_relative_to(r) for r in roots) else "")
    shown = " or ".join(dict.fromkeys(str(r) for r in roots))
    raise v.d.err(f"'{rel}' {verb} outside the project: {out}{via}; {what} must stay under {shown}",
                  key, line)


def _selector(node: Any, v: Validator, key: str, line: int | None,
              extra: Collection[str] = ()) -> dict[str, str]:
    m = v.mapping(node, key, line, ("target", "image", "profile", *extra))
    sel = {k: v.string(m[k], f"{key}.{k}", line_of(m, k)) for k in ("target", "image", "profile") if k in m}
    if not sel:
        raise v.d.err("needs at least one of target, image, profile", key, line)
    return sel


def glob_match(key: str, value: str, pattern: str) -> bool:
    """How --only, exclude, xfail and @pytest.mark.xarch match a cell's target, image or profile.

    Images and profiles: a shell glob (fnmatch). Targets: per path segment, `*` never crossing a `/`,
    and a `*` that ends the pattern means "and any variant": `linux/arm*` is arm with or without a
    variant (linux/arm, linux/arm/v6), never linux/arm64; `linux/arm64*` is arm64 (linux/arm64/v8.1);
    `linux/*` every linux target; `linux/*64` the 64-bit arches without a variant; `linux/arm` that
    target alone."""
    if key not in ("target", "targets"):
        return fnmatch.fnmatchcase(value, pattern)
    vals, pats = value.split("/"), pattern.split("/")
    last = pats[-1]
    if last.endswith("*") and len(vals) >= len(pats):
        head = last[:-1]
        ok_last = head == "" or fnmatch.fnmatchcase(vals[len(pats) - 1], head)
        return ok_last and all(fnmatch.fnmatchcase(v, p) for v, p in zip(vals, pats[:-1], strict=False))
    return len(vals) == len(pats) and all(fnmatch.fnmatchcase(v, p) for v, p in zip(vals, pats, strict=True))


def cell_values(c: Cell) -> dict[str, str]:
    return {"target": c.target.spec, "image": c.image, "profile": c.profile.name}


def _matches(sel: Mapping[str, str], c: Cell) -> bool:
    vals = cell_values(c)
    return all(glob_match(k, vals[k], pat) for k, pat in sel.items())


def _apply_exclude(top: CommentedMap, v: Validator, cells: list[Cell]) -> list[Cell]:
    if top.get("exclude") is None:
        return cells
    seq = v.seq(top["exclude"], "exclude", line_of(top, "exclude"))
    for i, node in enumerate(seq):
        sel = _selector(node, v, f"exclude[{i}]", line_of(seq, i))
        if not any(_matches(sel, c) for c in cells):
            raise v.d.err(f"{dict(sel)} matches no cell (a typo?)", f"exclude[{i}]", line_of(seq, i))
        cells = [c for c in cells if not _matches(sel, c)]
    return cells


def _apply_xfail(top: CommentedMap, v: Validator, cells: list[Cell]) -> list[Cell]:
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
    """Narrow the plan to cells matching the --only KEY=GLOBs (glob_match; globs of one key are
    alternatives, keys must all match), then to one shard. A glob that matches no cell of the matrix
    is exit 2, naming what there is."""
    for k, g in only:
        if plan.cells and not any(glob_match(k, cell_values(c)[k], g) for c in plan.cells):
            there = sorted({cell_values(c)[k] for c in plan.cells})
            hint = (" (a target glob matches per path segment: linux/arm* is arm with any variant, linux/arm64* "
                    "is arm64)" if k == "target" else "")
            raise ConfigError(f"--only {k}={g} matches no cell; the matrix's {k}s: {', '.join(there)}{hint}",
                              file="command line", key="--only")
    by_key: dict[str, list[str]] = {}
    for k, g in only:       # two globs of one key are alternatives; different keys must all match
        by_key.setdefault(k, []).append(g)
    cells = [c for c in plan.cells
             if all(any(glob_match(k, cell_values(c)[k], g) for g in gs) for k, gs in by_key.items())]
    if shard is not None:
        i, n = shard
        cells = [c for k, c in enumerate(sorted(cells, key=lambda c: c.id)) if k % n == i - 1]
    targets = {c.target.spec for c in cells}
    builds = tuple(b for b in plan.builds if b.target.spec in targets)
    return replace(plan, builds=builds, cells=tuple(cells))
