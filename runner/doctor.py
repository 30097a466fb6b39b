"""`xrun doctor`: is everything a matrix needs on this machine, and if not, the command that fixes it.

Each check probes the real thing (runs `qemu-<arch>-static --version`, opens a sandbox, asks the
docker daemon) rather than trusting package lists, because the failures users hit are of that kind:
an emulator build that segfaults on a newer kernel (the 2025 wave: tonistiigi/binfmt#215/#240,
docker/setup-qemu-action#198), a binfmt handler without the F flag that breaks only inside
containers, user namespaces switched off by a sysctl.

What is *needed* depends on the engine and the matrix (`required_for_plan`). Both engines start
qemu-<arch>-static explicitly with -cpu (bubblewrap for the local engine, a bind-mounted qemu in the
container for the docker engine), so the host's binfmt_misc is never needed for the program itself.
Its *children* are another matter (engines/children.py): the local engine gives each cell private
handlers where the kernel allows (Linux >= 6.7); otherwise, and in the docker engine, a child of a
foreign arch needs a host handler registered with F (the interpreter opened at registration), and a
child of the host's own arch runs natively. The "child processes" row says which applies here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import install, paths, platforms, proc, toolchain
from .doctor_binfmt import (
    BINFMT_DIR,
    NO_HANDLER,
    QEMU_FIX,
    flag_findings,
    interpreter_exists,
    mount_state,
    read_handler,
    register,
    segv_fix,
)
from .doctor_binfmt import BINFMT_IMAGE as BINFMT_IMAGE  # the pinned fix image, part of doctor's API
from .engines import emulator, limits, sandbox
from .engines.local import BWRAP_FIX
from .errors import ConfigError, InfraError
from .output.text import human_size
from .plan import Limits, Plan

PROC_SYS = Path("/proc/sys")
QEMU_TESTED = (7, 2)                         # every CPU model in platforms.py was verified on 7.2
QEMU_PIE_FIXED = (9, 2, 2)                   # qemu's own fix for the non-PIE crash (binfmt PR #243)
ZIG_ARGV: tuple[str, ...] = (sys.executable, "-m", "ziglang", "version")
PROBE_TIMEOUT = 20.0

DOCKER_FIX = install.DOCKER
WINE_FIX = install.WINE
NODE_FIX = install.NODE
USERNS_FIX = ("sudo sysctl -w kernel.unprivileged_userns_clone=1; on Ubuntu 24.04+ also "
              "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")

# What each engine itself needs, besides the per-arch emulators and what the matrix adds.
ENGINE_NEEDS: Mapping[str, frozenset[str]] = MappingProxyType({
    "local": frozenset({"go", "bwrap", "userns"}),
    "docker": frozenset({"go", "docker"}),
})
# The tool that runs a non-Linux OS's binaries. It is needed only once xrun runs that OS
# (platforms.OSES[os].runnable); until then those targets are only build-checked.
RUNTIME_TOOLS: Mapping[str, str] = MappingProxyType({"windows": "wine", "js": "node", "wasip1": "node"})
# Arches a host kernel runs without any emulator, so no binfmt handler exists or is needed.
_KERNEL_NATIVE: Mapping[str, frozenset[str]] = MappingProxyType({"amd64": frozenset({"amd64", "386"})})

_VERSION_RE = re.compile(r"version (\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Check:
    """One probed piece of the environment.

    ``needed`` says whether the given matrix/engine requires it; a check that is ok but carries a
    ``fix`` is a warning (works, but something is off, e.g. an emulator older than tested).
    """

    name: str
    ok: bool
    detail: str
    fix: str | None
    needed: bool

    @property
    def status(self) -> str:
        """ok | warn | FAIL (needed and missing) | absent (missing, not needed)."""
        if not self.ok:
            return "FAIL" if self.needed else "absent"
        return "warn" if self.fix else "ok"


@dataclass(frozen=True)
class _Probe:
    """What `EXE --version` did: the first line, the parsed qemu version, how it ended."""

    path: str
    first_line: str
    version: tuple[int, ...] | None
    problem: str | None           # None when it ran and exited 0
    segfault: bool
    non_pie: bool                 # a static ET_EXEC build (qemu configured with --disable-pie)


class _Host:
    """One doctor run: the environment (with the PATH override) and cached probes."""

    def __init__(self, path: str | None, env: Mapping[str, str] | None) -> None:
        self.env = dict(os.environ if env is None else env)
        if path is not None:
            self.env["PATH"] = path
        self._probes: dict[str, _Probe] = {}

    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.env.get("PATH", ""))

    def run(self, argv: Sequence[str], timeout: float = PROBE_TIMEOUT) -> proc.Result | str:
        """The finished process, or why it could not start."""
        try:
            return proc.run(argv, env=self.env, timeout=timeout)
        except OSError as e:
            return f"cannot execute {argv[0]}: {e.strerror or e}"

    def version_of(self, exe: str) -> proc.Result | str:
        """`exe --version`, run once per file and boot: every xrun run's preflight asks it of each
        emulator the matrix needs, and a file that changes is asked again (paths.remembered)."""
        def ask() -> list[Any] | str:
            r = self.run([exe, "--version"])
            return r if isinstance(r, str) else list(r)

        # only a clean answer is kept: a timeout on a loaded machine must not stick
        def clean(v: list[Any] | str) -> bool:
            return not isinstance(v, str) and (r := proc.Result(*v)).returncode == 0 and not r.timed_out

        got = paths.remembered("version", [os.path.realpath(exe)], exe, ask, keep=clean)
        return got if isinstance(got, str) else proc.Result(*got)

    def probe(self, exe: str) -> _Probe:
        """Run `exe --version` once per real file (a handler's interpreter is often the PATH qemu)."""
        key = os.path.realpath(exe)
        if key not in self._probes:
            self._probes[key] = self._probe(exe)
        return self._probes[key]

    def _probe(self, exe: str) -> _Probe:
        non_pie = _is_non_pie(exe)
        try:        # the same check as before every cell: never run a modified emulator, not even here
            emulator.verify(exe)
        except InfraError as e:
            return _Probe(exe, "", None, f"{e.what} ({e.fix})", False, non_pie)
        r = self.version_of(exe)
        if isinstance(r, str):
            return _Probe(exe, "", None, r, False, non_pie)
        first = next((ln.strip() for ln in r.stdout.splitlines() if ln.strip()), "")
        m = _VERSION_RE.search(first)
        version = tuple(int(g) for g in m.groups() if g is not None) if m else None
        problem = None
        if r.timed_out:
            problem = f"`{exe} --version` did not finish in {PROBE_TIMEOUT:.0f} s"
        elif r.signal is not None:
            problem = f"`{exe} --version` was killed by {proc.signame(r.signal)}"
        elif r.returncode != 0:
            problem = f"`{exe} --version` exited {r.returncode}: {_tail(r.stderr or r.stdout)}"
        return _Probe(exe, first, version, problem, r.signal == signal.SIGSEGV, non_pie)


def _tail(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text[-limit:] if text else "(no output)"


def _is_non_pie(path: str) -> bool:
    """True for an ELF of type ET_EXEC (not position-independent)."""
    try:
        with open(path, "rb") as f:
            head = f.read(18)
    except OSError:
        return False
    if len(head) < 18 or head[:4] != b"\x7fELF":
        return False
    e_type = int.from_bytes(head[16:18], "little" if head[5] == 1 else "big")
    return e_type == 2


def _vstr(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def _emulator_warnings(p: _Probe) -> list[str]:
    notes = []
    if p.version is not None and p.version[:2] < QEMU_TESTED:
        notes.append(f"older than tested ({_vstr(QEMU_TESTED)}): CPU models may be missing or behave differently")
    if p.non_pie and (p.version is None or p.version < QEMU_PIE_FIXED):
        notes.append("a non-PIE build older than qemu 9.2.2: the combination that segfaults at random "
                     "on 2025+ kernels (tonistiigi/binfmt#215, PR #219)")
    return notes


def _check_qemu(h: _Host, a: platforms.Arch, needed: bool, binfmt_dir: Path) -> Check:
    name = f"qemu-{a.qemu}-static"
    exe = h.which(name)
    if exe is None:
        return Check(name, False, "not found on PATH", QEMU_FIX, needed)
    p = h.probe(exe)
    if p.problem is not None:
        if p.segfault:
            return Check(name, False, f"{exe}: {p.problem}: this build crashes on this kernel (the 2025 "
                         "breakage of some qemu builds, tonistiigi/binfmt#215/#240)", segv_fix(a, binfmt_dir),
                         needed)
        return Check(name, False, f"{exe}: {p.problem}", QEMU_FIX, needed)
    version = _vstr(p.version) if p.version else f"unknown version ({p.first_line or 'no output'})"
    warnings = _emulator_warnings(p)
    detail = f"{exe}: qemu {version}" + "".join(f"; {w}" for w in warnings)
    fix = None
    if warnings:
        fix = segv_fix(a, binfmt_dir) if p.non_pie else f"{QEMU_FIX} (Debian 12 / Ubuntu 24.04 ship 7.2+)"
    return Check(name, True, detail, fix, needed)


# -- binfmt_misc -------------------------------------------------------------------------------

def _check_binfmt_mount(binfmt_dir: Path, needed: bool, engine: str) -> Check:
    ok, detail, fix = mount_state(binfmt_dir)
    if not ok and not needed:       # say what its absence costs, not only that it is absent
        from .engines import children

        if engine == "local" and children.private_off() is None:
            cost = ("the local engine does not need it: xrun starts qemu itself, and each cell's children run "
                    "under private binfmt_misc handlers (see child processes)")
        else:
            cost = (f"the {engine} engine runs the program without it (xrun starts qemu itself), but a child "
                    "process of a foreign arch, a program exec'ing a helper, fails with 'exec format error' "
                    "(see child processes)")
        detail = f"{detail}: {cost}"
    return Check("binfmt_misc", ok, detail, fix, needed)


def _check_handler(h: _Host, a: platforms.Arch, binfmt_dir: Path, needed: bool) -> Check:
    name = f"binfmt qemu-{a.qemu}"
    entry = binfmt_dir / f"qemu-{a.qemu}"
    hd = read_handler(entry) if entry.is_file() else None
    if hd is None:
        return Check(name, False, f"{NO_HANDLER} ({entry} is missing)", register(a, binfmt_dir), needed)
    facts = [("enabled" if hd.enabled else "disabled"), f"flags {hd.flags or '(none)'}",
             f"interpreter {hd.interpreter or '(none)'}"]
    fatal, notes, fix = flag_findings(hd, a, binfmt_dir)   # the F flag and the interpreter's path
    if interpreter_exists(hd):
        p = h.probe(hd.interpreter)
        real = os.path.realpath(hd.interpreter)
        on_path = h.which(f"qemu-{a.qemu}-static")
        interp = f"interpreter {hd.interpreter}" + (f" -> {real}" if real != hd.interpreter else "")
        if on_path is not None and os.path.realpath(on_path) == real:
            interp += " (the qemu on PATH)"
        elif on_path is not None:
            other = h.probe(on_path)
            ver = f" (qemu {_vstr(other.version)})" if other.version else ""
            notes.append(f"not the qemu on PATH ({on_path}{ver}): programs that exec other foreign "
                         "binaries run those under the handler's qemu")
        facts[-1] = interp
        if p.version:
            facts.append(f"qemu {_vstr(p.version)}")
        if p.segfault:
            fatal.append(f"{p.problem}: this build crashes on this kernel (the 2025 breakage of some qemu "
                         "builds, tonistiigi/binfmt#215/#240)")
            fix = segv_fix(a, binfmt_dir)
        elif p.problem is not None:
            fatal.append(p.problem)
            fix = fix or segv_fix(a, binfmt_dir)
        else:
            warnings = _emulator_warnings(p)
            notes.extend(warnings)
            if warnings and fix is None:
                fix = segv_fix(a, binfmt_dir)
    if not hd.enabled:
        fatal.append("the handler is disabled")
        fix = fix or f"echo 1 | sudo tee {entry}"
    detail = ", ".join(facts) + "".join(f"; {x}" for x in fatal + notes)
    return Check(name, not fatal, detail, fix, needed)


# -- sandbox, engines, toolchains ------------------------------------------------------------

def _check_bwrap(h: _Host, needed: bool) -> Check:
    exe = h.which("bwrap")
    if exe is None:
        return Check("bubblewrap", False, "bwrap not found on PATH", BWRAP_FIX, needed)
    r = h.run([exe, "--version"])
    ver = r.stdout.strip() if isinstance(r, proc.Result) and r.returncode == 0 else "version unknown"
    return Check("bubblewrap", True, f"{exe}: {ver}", None, needed)


def _userns_fix() -> str:
    """The sysctl that blocks unprivileged user namespaces here, else the usual suspects."""
    fixes = []
    for key, bad, good in (("kernel/unprivileged_userns_clone", "0", "1"),
                           ("kernel/apparmor_restrict_unprivileged_userns", "1", "0"),
                           ("user/max_user_namespaces", "0", "15000")):
        try:
            value = (PROC_SYS / key).read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if value == bad:
            fixes.append(f"sudo sysctl -w {key.replace('/', '.')}={good}")
    return " && ".join(fixes) if fixes else USERNS_FIX + " (or run xrun as root)"


def _check_limits() -> Check:
    """Which mechanism will hold each local cell's memory and process limits on this machine."""
    with limits.cell_limits(Limits()) as lim:
        out = lim.outcome()
    limits.close()
    weak = [k for k, v in (("memory", out.memory), ("pids", out.pids)) if "not enforced" in v]
    fix = ("run xrun as root, or from a systemd scope that delegates memory and pids "
           "(`systemd-run --user --scope -p Delegate=yes xrun ...`), for per-cell cgroups") if weak else None
    return Check("resource limits", not weak, f"memory {out.memory}; processes {out.pids}", fix, False)


def _check_children(engine: str, foreign: Sequence[str]) -> Check:
    """How a cell's child processes will run under this engine (engines/children.py)."""
    from .engines import children

    if engine == "local" and (why := children.private_off()) is None:
        return Check("child processes", True, "run under the cell's qemu and CPU model, every arch including "
                     f"the host's own (private binfmt_misc handlers per cell, Linux {os.uname().release})",
                     None, False)
    why_text = why if engine == "local" else "the docker engine's containers get no private handlers"
    served = [a for a in foreign if children.plan(a, "x").binfmt == "host"]
    lacking = [a for a in foreign if a not in served]
    detail = (f"{why_text}; the host's handlers (flag F) serve {', '.join(served) or 'no arch'}, with QEMU_CPU "
              f"passed on; {platforms.host_goarch()} children run natively, outside the CPU profile")
    if lacking:
        detail += f"; a child of {', '.join(lacking)} fails with 'exec format error'"
    first = platforms.ARCHES[lacking[0]].qemu if lacking else None
    return Check("child processes", not lacking, detail, install.binfmt_enable(first) if first else None, False)


def _check_userns(h: _Host, needed: bool) -> Check:
    bwrap = h.which("bwrap")
    if bwrap is not None:
        r = sandbox.probe(bwrap, h.env)     # the sandbox of every local cell, minus the image
    elif (unshare := h.which("unshare")) is not None:
        r = h.run([unshare, "-Ur", "true"])
    else:
        return Check("user namespaces", False, "untested: neither bwrap nor unshare is on PATH", BWRAP_FIX,
                     needed)
    what = ("a bwrap sandbox (user, pid and net namespaces) opens" if bwrap is not None
            else "`unshare -Ur true` works")
    if isinstance(r, str):
        return Check("user namespaces", False, r, BWRAP_FIX, needed)
    if r.returncode != 0:
        shown = " ".join([os.path.basename(r.argv[0]), *r.argv[1:]])
        return Check("user namespaces", False, f"`{shown}` failed: {_tail(r.stderr or r.stdout)}",
                     _userns_fix(), needed)
    return Check("user namespaces", True, what, None, needed)


def _check_docker(h: _Host, needed: bool) -> Check:
    exe = h.which("docker")
    if exe is None:
        return Check("docker", False, "the docker CLI is not on PATH", DOCKER_FIX, needed)
    r = h.run([exe, "version", "--format", "{{.Server.Version}} {{.Server.Os}}/{{.Server.Arch}}"], timeout=30)
    if isinstance(r, str):
        return Check("docker", False, r, DOCKER_FIX, needed)
    if r.returncode != 0 or r.timed_out:
        err = r.stderr or r.stdout
        if "permission denied" in err.lower():
            fix = "sudo usermod -aG docker $USER (then log in again), or run xrun with sudo"
        else:
            fix = "sudo systemctl start docker"
        what = "did not answer in 30 s" if r.timed_out else _tail(err)
        return Check("docker", False, f"the daemon is not reachable: {what}", fix, needed)
    return Check("docker", True, f"engine {r.stdout.strip()}", None, needed)


def _check_go(needed: bool) -> Check:
    try:
        d = toolchain.go_bin_dir()
        v = toolchain.go_version()
    except InfraError as e:
        return Check("go", False, e.what, e.fix, needed)
    return Check("go", True, f"{v} ({d})", None, needed)


def _check_zig(h: _Host, needed: bool) -> Check:
    fix = f"{sys.executable} -m pip install ziglang"
    r = h.run(ZIG_ARGV, timeout=60)
    if isinstance(r, str):
        return Check("zig", False, r, fix, needed)
    if r.returncode != 0 or r.timed_out:
        err = r.stderr or r.stdout
        what = "the ziglang package is not installed" if "No module named" in err else _tail(err)
        return Check("zig", False, what, fix, needed)
    return Check("zig", True, f"zig {r.stdout.strip()} (python -m ziglang)", None, needed)


def _check_tool(h: _Host, label: str, names: Sequence[str], fix: str, needed: bool, why: str) -> Check:
    """A runtime found on PATH and its `--version`."""
    for n in names:
        exe = h.which(n)
        if exe is None:
            continue
        r = h.run([exe, "--version"], timeout=60)
        if isinstance(r, str):
            return Check(label, False, r, fix, needed)
        if r.returncode != 0 or r.timed_out:
            return Check(label, False, f"`{n} --version` failed: {_tail(r.stderr or r.stdout)}", fix, needed)
        return Check(label, True, f"{exe}: {r.stdout.strip().splitlines()[0] if r.stdout.strip() else '?'}",
                     None, needed)
    return Check(label, False, f"{' / '.join(names)} not found on PATH ({why})", fix, needed)


def _check_images() -> Check:
    from .rootfs import ImageStore

    store = ImageStore()
    try:
        cached = store.list()
    except OSError as e:   # informational only: an unreadable cache is rebuilt on demand
        return Check("image cache", True, f"{store.cache_dir}: unreadable ({e})", None, False)
    size = sum(c.size for c in cached)
    return Check("image cache", True,
                 f"{store.cache_dir}: {len(cached)} image(s), {human_size(size)}", None, False)


# -- the public API --------------------------------------------------------------------------

def _engine_needs(engine: str) -> frozenset[str]:
    if engine not in ENGINE_NEEDS:
        raise ConfigError(f"unknown engine '{engine}'; known: {', '.join(ENGINE_NEEDS)}",
                          file="command line", key="--engine")
    return ENGINE_NEEDS[engine]


def _collect(*, arches: Collection[str] | None, engine: str, needs: Collection[str], path: str | None,
             binfmt_dir: Path, env: Mapping[str, str] | None, only_needed: bool) -> list[Check]:
    need = set(needs) | _engine_needs(engine)
    h = _Host(path, env)
    wanted = sorted(a for a in (platforms.ARCHES if arches is None else arches)
                    if a in platforms.ARCHES and platforms.ARCHES[a].qemu)
    native = _KERNEL_NATIVE.get(platforms.host_goarch(), frozenset({platforms.host_goarch()}))
    foreign = [a for a in wanted if a not in native]
    binfmt_needed = "binfmt" in need and bool(foreign)
    out: list[Check] = []

    def add(needed: bool, make: Callable[[], Check]) -> None:
        if needed or not only_needed:
            out.append(make())

    for a in wanted:
        out.append(_check_qemu(h, platforms.ARCHES[a], True, binfmt_dir))
    if binfmt_needed or not only_needed:
        mount = _check_binfmt_mount(binfmt_dir, binfmt_needed, engine)
        out.append(mount)
        if mount.ok:   # per-arch entries of an unmounted or switched-off binfmt_misc say nothing new
            handlers = [_check_handler(h, platforms.ARCHES[a], binfmt_dir, binfmt_needed) for a in foreign]
            if binfmt_needed:
                out.extend(handlers)
            else:
                # Not needed: one line for the unregistered ones; registered ones keep their row
                # (a crashing or F-less handler still matters to programs that exec foreign binaries).
                missing = [c for c in handlers if c.detail.startswith(NO_HANDLER)]
                unregistered = [c.name.removeprefix("binfmt ") for c in missing]
                out.extend(c for c in handlers if c not in missing)
                if unregistered:
                    out.append(Check("binfmt handlers", False, f"none registered for {', '.join(unregistered)} "
                                     f"(the {engine} engine does not use them)", None, False))
    add("bwrap" in need, lambda: _check_bwrap(h, "bwrap" in need))
    add("userns" in need, lambda: _check_userns(h, "userns" in need))
    if engine == "local":
        add(False, _check_limits)
    if engine in ("local", "docker"):
        add(False, lambda: _check_children(engine, foreign))
    add("docker" in need, lambda: _check_docker(h, "docker" in need))
    add("go" in need, lambda: _check_go("go" in need))
    add("zig" in need, lambda: _check_zig(h, "zig" in need))
    add("wine" in need, lambda: _check_tool(h, "wine", ("wine", "wine64"), WINE_FIX, "wine" in need,
                                            "runs windows targets"))
    add("node" in need, lambda: _check_tool(h, "node", ("node",), NODE_FIX, "node" in need,
                                            "runs js/wasm and wasip1 targets"))
    add(False, _check_images)
    return out


def run_checks(*, arches: Collection[str] | None = None, engine: str = "local", needs: Collection[str] = (),
               path: str | None = None, binfmt_dir: Path = BINFMT_DIR,
               env: Mapping[str, str] | None = None) -> list[Check]:
    """Probe everything; `needed` marks what the engine, `needs` and the emulated `arches` require.

    arches None means every arch xrun can emulate. needs: go, bwrap, userns, docker, binfmt, zig,
    wine, node (the engine's own are added). path overrides PATH for every lookup and probe.
    """
    return _collect(arches=arches, engine=engine, needs=needs, path=path, binfmt_dir=binfmt_dir, env=env,
                    only_needed=False)


def required_for_plan(plan: Plan, engine: str) -> tuple[set[str], set[str]]:
    """(GOARCHes to emulate, other needs) of a plan under an engine."""
    arches = {c.target.arch for c in plan.cells
              if c.target.runnable and c.cpu and c.target.facts.qemu}   # cpu "" = native (host profile)
    needs = set(_engine_needs(engine))
    native = _KERNEL_NATIVE.get(platforms.host_goarch(), frozenset({platforms.host_goarch()}))
    if not arches - native:
        needs.discard("binfmt")
    for b in plan.builds:
        t = b.target
        if t.cc == "zig":
            needs.add("zig")
        tool = RUNTIME_TOOLS.get(t.os)
        if tool is not None and platforms.OSES[t.os].runnable:
            needs.add(tool)
    return arches, needs


def preflight(plan: Plan, engine: str) -> None:
    """Raise InfraError (exit 3) naming the first piece the plan needs that is missing, and its fix."""
    arches, needs = required_for_plan(plan, engine)
    for c in _collect(arches=arches, engine=engine, needs=needs, path=None, binfmt_dir=BINFMT_DIR, env=None,
                      only_needed=True):
        if c.needed and not c.ok:
            raise InfraError(f"{c.name}: {c.detail}", c.fix or "see `xrun doctor` for details")
