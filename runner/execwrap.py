"""`xrun exec`: run any binary in one cell, passing args, stdin, stdout, stderr and the exit status through.

So `go test -exec 'xrun exec --profile pi-zero' ./...` runs a package's own tests on that CPU and
image. The arch comes from the binary's header; the level from its Go build info. The current
directory (go test runs a test binary in its package directory) is bound read-only at the same path.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from . import paths
from .engines import execplan
from .errors import ConfigError, InfraError
from .execview import ExecView, cell_env, rules, view_for

if TYPE_CHECKING:
    from .engines.local import LocalEngine
    from .model import Evidence
    from .plan import Cell, Profile, RunSpec

# A passing run needs only the cached launch (engines/execplan.py): what decides a cell (the binary's
# facts, the profile, the image, the engine) is imported when there is no plan yet, or after a failure.


def _profile(name: str, goarch: str) -> Profile:
    from .plan import Profile, builtin_profile
    from .profiles import BUILTIN_PROFILES

    if name in BUILTIN_PROFILES:
        return builtin_profile(name)
    from .profiles.machine import from_cpu

    _check_cpu(name, goarch)
    if (r := from_cpu(goarch, name)) is not None:       # a model with toggles: what they need added
        return Profile.of_machine(name, {goarch: r}, "cpu")
    return Profile(name, {goarch: name})     # a plain qemu model name


def _check_cpu(name: str, goarch: str) -> None:
    """A --profile that is neither a profile nor a CPU model qemu knows (`pizero`) is exit 2, with the
    profile it probably means, as the matrix says it; not a "unable to find CPU model" from qemu."""
    from . import platforms, qemu_cpus
    from .profiles import BUILTIN_PROFILES
    from .yamlcheck import did_you_mean

    names = qemu_cpus.models(goarch)
    if names is None or qemu_cpus.accepted(name, names):
        return      # no emulator here to ask: starting the cell says what is missing
    close = qemu_cpus.closest(name, names)
    raise ConfigError(f"unknown profile '{name}'{did_you_mean(name, BUILTIN_PROFILES)}: neither a profile "
                      f"({', '.join(BUILTIN_PROFILES)}) nor a CPU model qemu-{platforms.arch(goarch).qemu}-static "
                      f"knows" + (f" (closest models: {', '.join(close)})" if close else ""),
                      file="command line", key="--profile")


def _image_known(image: str) -> bool:
    """scratch or an image definition (a form, `distroless-static:nonroot`, is checked by its definition)."""
    if image == "scratch":
        return True
    base, sep, _ = image.partition(":")
    if not (paths.images_dir() / f"{base}.yaml").is_file():
        return False
    if not sep:
        return True
    from .rootfs.definitions import form_config

    return form_config(image) is not None


def entry_point() -> list[str]:
    """How a wrapper starts xrun: the installed `xrun` script, else this Python with -P (the cwd, a Go
    module that may have its own `runner/` or `xarch/` directory, is then not on sys.path)."""
    for cand in (Path(sys.executable).with_name("xrun"), shutil.which("xrun")):
        if cand and os.access(cand, os.X_OK):
            return [str(Path(cand).absolute())]
    return [sys.executable, "-P", "-m", "xarch"]


def launcher_command(options: Sequence[str], xrun: Sequence[str] | None = None) -> list[str]:
    """The compiled launcher with these options (engines/execlauncher.py): `xrun exec`, with no Python
    on a passing run; it hands the rest to `xrun` (entry_point())."""
    from .engines.execlauncher import launcher

    return [str(launcher(xrun if xrun is not None else entry_point())), *options]


def install_wrappers(directory: Path, options: Sequence[str]) -> tuple[list[Path], list[str]]:
    """go_linux_<goarch>_exec scripts that `go test` / `go run` pick up from PATH when cross-compiling,
    and notes. Each runs the compiled launcher (`xrun exec --launcher`). Go runs a binary of the host's
    own arch itself and never looks for that wrapper: none is written (a CPU profile for it needs `-exec`)."""
    directory.mkdir(parents=True, exist_ok=True)
    from . import platforms

    xrun = entry_point()
    fast = launcher_command((), xrun)
    out, notes = [], []
    host = platforms.host_goarch()
    for goarch, a in platforms.ARCHES.items():
        if a.qemu is None:
            continue
        p = directory / f"go_linux_{goarch}_exec"
        if goarch == host:
            p.unlink(missing_ok=True)       # a stale one would suggest it is used
            opts = " ".join(shlex.quote(o) for o in options)
            notes.append(f"no go_linux_{goarch}_exec: go runs {goarch} test binaries on this {goarch} host itself "
                         f"and never calls that wrapper, so a CPU profile for {goarch} needs "
                         f"`go test -exec \"$(xrun exec --launcher {opts})\" ./...`")
            continue
        # the launcher lives in the cache: when that was wiped, xrun itself runs the binary (and a later
        # `xrun exec --launcher` or --install-wrappers builds the launcher again)
        p.write_text("#!/bin/sh\n# written by `xrun exec --install-wrappers`: runs Go test binaries in an "
                     f"xarch cell\n[ -x {shlex.quote(fast[0])} ] || exec "
                     + " ".join(shlex.quote(x) for x in [*xrun, "exec", *options]) + ' "$@"\nexec '
                     + " ".join(shlex.quote(x) for x in [*fast, *options]) + ' "$@"\n')
        p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        out.append(p)
    return out, notes


def run_in_cell(binary_arg: str, args: Sequence[str], *, image: str, profile: str,
                timeout: float | None, env_items: Sequence[str] = (), no_env: bool = False) -> int:
    """Run the binary; return its exit status (128+N when killed by signal N, like a shell).

    What it sees of the host and which variables it gets: runner/execview.py. How it starts: the
    cached launch of its image, profile and kind of binary (engines/execplan.py), made here first."""
    binary = Path(binary_arg).resolve()
    cache = paths.cache_dir()
    kind = execplan.header_kind(str(binary))
    where = execplan.plan_key(cache, image, profile, kind) if kind is not None else None
    plan = execplan.load(where) if where is not None else None
    if plan is None:
        made = _make_plan(binary_arg, binary, image, profile, args, cache)
        if isinstance(made, int):
            return made
        plan, stamped = made
        if where is not None:
            execplan.save(where, {**plan, "view": rules()}, stamped)     # the launcher's view rules too
    env = cell_env(os.environ, env_items, no_env)
    cwd = Path.cwd()
    paths.remove_stale_tmpdirs()        # what a test binary killed by go test's -timeout left
    view = view_for(cwd, args, env, paths.run_tmpdir("exec"))
    try:
        def on_exit(rc: int, err: bytearray | None, out: bytearray | None, outcome: Callable[[], object]) -> int:
            return _explain_exit(binary, args, image, profile, env, cwd, view.binds, timeout, rc, err, out, outcome)

        return execplan.launch(plan, str(binary), args, str(cwd), view.binds, env, timeout, on_exit)
    finally:
        view.close()


def explain_recorded(record: str) -> int:
    """`xrun exec --explain-exit RECORD`: the compiled launcher ran a binary that did not exit 0 and
    recorded what it saw; classify it as a Python run would have, remove its scratch dir, and return
    the status."""
    import json

    from .engines.execplan import Limits
    from .engines.limits import outcome_of

    rec = json.loads(Path(record).read_text())
    scratch = Path(rec["scratch"])
    # the record lies in the launcher's own scratch dir (xarch-exec-PID-*): nothing else is removed
    if Path(record).resolve().parent != scratch.resolve() or not scratch.name.startswith("xarch-exec-"):
        raise ConfigError("not a record of xrun exec's launcher", file=record, key="--explain-exit")
    view = ExecView(scratch=scratch)
    try:
        lim = rec["limits"]
        numbers = Limits(*rec["plan_limits"])

        def outcome() -> object:
            return outcome_of(numbers, lim["cgroups"], lim["nproc"], lim["oom_kills"] > 0, lim["pids_refusals"] > 0,
                              lim["memory_peak"])

        def tail(name: str) -> bytearray | None:
            return bytearray.fromhex(rec[name]) if name in rec else None

        binds = [(a, b, bool(rw)) for a, b, rw in rec["binds"]]
        return _explain_exit(Path(rec["binary"]), rec["args"], rec["image"], rec["profile"], rec["env"],
                             Path(rec["cwd"]), binds, rec.get("timeout"), rec["rc"], tail("stderr"), tail("stdout"),
                             outcome)
    finally:
        view.close()


def _cell(binary_arg: str, binary: Path, image: str, profile: str, args: Sequence[str],
          env: dict[str, str], timeout: float | None) -> tuple[Cell, RunSpec]:
    """The cell a binary runs in (its arch from the header, its level from its Go build info); exit 2
    for what is not a runnable binary, an unknown image or a profile without a CPU for its arch."""
    from . import platforms
    from .artifact import inspect
    from .plan import Cell, Expect, RunSpec, Target

    if not _image_known(image):
        from .matrix import known_images

        raise ConfigError(f"unknown image '{image}'; known: {', '.join(known_images())}",
                          file="command line", key="--image")
    facts = inspect(binary)
    if facts.format == "missing":
        raise ConfigError("no such file", file=binary_arg)
    if facts.format != "elf" or facts.goarch is None:
        raise ConfigError(f"not a Linux executable xarch can run: {facts.describe()}", file=binary_arg)
    a = platforms.arch(facts.goarch)
    level = facts.go_level
    spec = f"linux/{a.goarch}" + (f"/{level}" if level and level != a.default_level else "")
    target = Target(spec, "linux", a.goarch, level if level != a.default_level else None)
    prof = _profile(profile, a.goarch)
    model = prof.model_for(target)
    if model is None:
        raise ConfigError(f"profile '{profile}' names no CPU for {a.goarch}", file="command line",
                          key="--profile")
    return Cell(target, image, prof, model, tuple(args), {}), RunSpec(tuple(args), env, None, timeout or 0, Expect())


def _root(engine: LocalEngine, cell: Cell) -> Path:
    if cell.image == "scratch":
        return engine.empty_root
    from .pipeline import RootfsProvider

    return RootfsProvider(engine.empty_root).get(cell)


def _make_plan(binary_arg: str, binary: Path, image: str, profile: str, args: Sequence[str],
               cache: Path) -> tuple[dict[str, object], list[str]] | int:
    """The launch to cache, through the local engine; or the exit status when a static check already
    decides the cell (a PT_INTERP the image lacks)."""
    from .engines.local import LocalEngine
    from .model import Evidence

    cell, run = _cell(binary_arg, binary, image, profile, args, {}, None)
    with LocalEngine(state=execplan.state_dir(cache)) as engine:
        made = engine.exec_plan(cell, binary, _root(engine, cell), run)
    if isinstance(made, Evidence):
        return _report(cell, made, run, fallback=127 if made.loader_missing or not made.ran else 1)
    return made


def _explain_exit(binary: Path, args: Sequence[str], image: str, profile: str, env: dict[str, str], cwd: Path,
                  binds: Sequence[tuple[str, str, bool]], timeout: float | None, rc: int,
                  err_tail: bytearray | None, out_tail: bytearray | None, outcome: Callable[[], object]) -> int:
    """After a run that did not exit 0: the matrix's classification of it, in one line when it says
    more than the binary did (a CPU refusal, a fault, what the image lacks); the status to return."""
    from dataclasses import replace

    from . import forensics  # only now: a passing run never loads the evidence readers
    from .engines.launch import split_status
    from .engines.local import LocalEngine
    from .model import STDERR_TO_TERMINAL, Evidence

    limits_outcome = outcome()
    cell, run = _cell(str(binary), binary, image, profile, args, env, timeout)
    code, sig = split_status(rc, None)
    with LocalEngine() as engine:
        root = _root(engine, cell)
        prep = engine.prepare(cell, binary, root, run, workdir=cwd, binds=binds)
        if isinstance(prep, Evidence):     # the image changed under the cached launch
            return _report(cell, prep, run, fallback=rc)
        prep.close()
        err = err_tail.decode(errors="replace") if err_tail is not None else ""
        said = out_tail.decode(errors="replace") if out_tail is not None else ""
        ev = prep.evidence(ran=True, exit_code=code, signal=sig, emulator=prep.emulator, path=prep.how,
                           limits=limits_outcome, hardening=prep.hardening, children=prep.children, stderr=err,
                           stdout=said)
        if sig is not None and forensics.wants_core(ev):
            ev = replace(ev, **engine.guest_core(cell, binary, root, run, workdir=cwd, signal=sig, binds=binds))
    ev = forensics.enrich(cell, ev, binary)
    if err_tail is None:
        ev = replace(ev, notes=(*ev.notes, STDERR_TO_TERMINAL))
    return _report(cell, ev, run, fallback=rc, quiet=() if sig is not None else _ORDINARY)


# a test binary's own failure: its output said it all (go test prints FAIL); xrun adds nothing
_ORDINARY = ("exit-status", "ok", "crashed")


def _report(cell: Cell, ev: Evidence, run: RunSpec, fallback: int, quiet: Sequence[str] = ()) -> int:
    """Say in one line why the binary did not run normally (a shell would only say 'Illegal instruction')."""
    from . import proc
    from .classify import classify
    from .output.text import plain

    v = classify(cell, ev, run.expect, run.timeout or 0)
    if v.verdict in quiet:
        if v.fix and v.fix.startswith(f"image {cell.image} has no"):    # the image lacks what the test used
            sys.stderr.write(plain(f"xrun exec: {v.fix}") + "\n")
        return fallback
    if v.verdict == "infra-error":
        raise InfraError(v.explanation or "the runner failed", v.fix or "run `xrun doctor`")
    sys.stderr.write(plain(f"xrun exec: {cell.id}: {v.verdict}: {v.explanation}") + "\n")
    if v.fix:
        sys.stderr.write(plain(f"xrun exec: fix: {v.fix}") + "\n")
    proc.kill_all()
    return fallback
