"""Classification: a pure function from evidence to one verdict with an explanation and a fix.

No I/O here. Unit tests feed recorded evidence; end-to-end tests prove each verdict from real binaries.
"""

from __future__ import annotations

import re
import signal as _signal

from .. import install, platforms
from ..artifact import ArtifactFacts
from ..forensics.libc import GLIBC_VERSION_MISSING, MUSL_SYMBOL_MISSING
from ..model import STDERR_TO_TERMINAL, Evidence, Fault, Verdict
from ..plan import Cell, Expect, size_text
from ..proc import signame
from ..profiles.machine import level_gap as machine_level_gap
from ..profiles.machine import machine_level
from . import advice
from .foreign import foreign_verdict

_GO_AMD64 = re.compile(r"This program can only be run on AMD64 processors with (v\d) microarchitecture support")
_GO_CPU_MSGS = (
    "This program can only be run on processors with MMX support",
    "This CPU has no floating point hardware",
    "This program can only be run on",
)
_GO_SIGILL = re.compile(r"^SIGILL: illegal instruction", re.M)
_GO_FATAL = re.compile(r"^(panic: |fatal error: |fatal: |SIG[A-Z]+: )", re.M)
_QEMU_BAD_ELF = "Invalid ELF image for this architecture"
_QEMU_NO_INTERP = re.compile(r"Could not open '([^']+)': No such file or directory")
_QEMU_NO_MODEL = re.compile(r"unable to find CPU model '([^']+)'")
_QEMU_FEATURES = ("Some features requested in the CPU model are not available",
                  "Selected CPU generation is too new", "Selected CPU does not support",
                  "NaN mode not supported by CPU")
_GLIBC_LIB = re.compile(r"error while loading shared libraries: ([^:]+): cannot open shared object file")
_MUSL_LIB = re.compile(r"Error loading shared library ([^:\s]+): No such file")
_ISA_LEVEL = "CPU ISA level is lower than required"
_WRITE_DENIED = ("read-only file system", "operation not permitted")
_USER_FIX = ("write under /tmp (or $TMPDIR), or give the program a writable directory it owns in production: "
             "a volume mounted there, or `COPY --chown=65532:65532` plus a writable mount; or run it as another "
             "USER")
# a child the cell started could not be executed, or died, or refused the CPU (the cell itself ran)
_CHILD_ENOEXEC = (re.compile(r"fork/exec ([^:\s]+): exec format error"),
                  re.compile(r"([^:\s]+): cannot execute binary file: Exec format error"),
                  re.compile(r"exec (?:format error: )?([^:\s]+): exec format error"),
                  re.compile(r"^([^:\s]+): (?:line )?1: \S*ELF\S*: (?:not found|Syntax error)", re.M),
                  re.compile(r"([^:\s'\"]+)['\"]?: [Ee]xec format error"))
_CHILD_SIGNAL = re.compile(r"qemu: uncaught target signal (\d+) \(([^)]+)\)")
# Which of the images/ definitions provides a library (prefix of the soname).
_LIB_IMAGES = (("libstdc++.so", "distroless-cc"), ("libgcc_s.so", "distroless-cc"),
               ("libssl.so", "distroless-base"), ("libcrypto.so", "distroless-base"),
               ("libc.so", "distroless-base"), ("libm.so", "distroless-base"),
               ("libresolv.so", "distroless-base"), ("libpthread.so", "distroless-base"))


def _tail(text: str, n: int = 3) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def _first(text: str, needle: str) -> str:
    for ln in text.splitlines():
        if needle in ln:
            return ln.strip()
    return needle


def _mismatch_fix(cell: Cell, facts: ArtifactFacts) -> str:
    a = cell.target.facts
    want = f"GOOS={cell.target.os} GOARCH={cell.target.arch}"
    if cell.target.variant and a.level_var:
        want += f" {advice.level_setting(a, cell.target.variant)}"
    return (f"make the build produce a {cell.target.spec} binary ({want}); check build.env, the target's "
            "env and the build command for a hard-coded GOARCH or a prebuilt file")


def _unbound_symbols(cell: Cell, ev: Evidence, vers: list[str], names: list[str]) -> Verdict:
    """missing-library for symbols the image's C library lacks: name the symbols and both versions.

    The program may need C (cgo), so the fix is to build against the image's C library (and do without
    the newer symbols) or to ship on an image whose C library has them; CGO_ENABLED=0 only if it does not.
    """
    img = f"{cell.image}'s {ev.image_libc}" if ev.image_libc else f"{cell.image}'s C library"
    said = f" (stderr: '{_tail(ev.stderr, 2)}')"
    if vers:
        need = max(vers, key=lambda v: tuple(int(x) for x in v[6:].split(".")))[6:]
        has = ev.image_libc.split(" ", 1)[1] if ev.image_libc and " " in ev.image_libc else None
        return Verdict("missing-library", f"{img} is too old: {advice.too_new_for_glibc(list(ev.symbols), vers)}"
                       + said, advice.glibc_fix(cell.target.spec, has, need, [n for n, _ in ev.symbols]))
    linked = [f"{n}@{v}" for n, v in ev.symbols if v]
    what = (f"{img} could not resolve {', '.join(dict.fromkeys(names))}"
            + (f": the binary was linked against glibc ({', '.join(linked)})" if linked else " (a glibc-only symbol)"))
    return Verdict("missing-library", what + said, advice.musl_fix(cell.target.spec, names))


def _cpu_verdict(cell: Cell, ev: Evidence, what: str) -> Verdict:
    """unsupported-cpu, or emulation-unsupported when the model has what faulted but TCG cannot run it.

    The faulting instruction decides (issue 13): its extension against the model's table. Without a
    PC (Go's startup check refused, or no core could be had) the Go level's extensions against the
    model's decide, and the explanation says that no instruction was seen.
    """
    a = cell.target.facts
    built = ev.artifact.go_level or cell.target.level
    fault = ev.fault
    if fault is not None and fault.signal == "SIGILL" and fault.extension and fault.model_has_extension is not None:
        return _fault_verdict(cell, ev, what, fault, built)
    mach = cell.machine
    if mach is not None:        # a real machine: its features decide, not the model's
        gap = machine_level_gap(mach, built)
    else:
        gap = platforms.level_gap(a.goarch, built, cell.cpu) if cell.cpu else None
    model = a.model(cell.cpu)
    seen = (f" The faulting instruction is {fault.line()}." if fault is not None else
            " No faulting instruction could be read" + (f" ({ev.core_note})" if ev.core_note else "")
            + "; this rests on the binary's Go level.")
    if gap == () or (gap is None and model and model.level and built
                     and a.level_index(built) <= a.level_index(model.level)):
        cannot = frozenset(mach.missing) if mach is not None else platforms.TCG_LACKS.get(a.goarch, frozenset())
        lacks = sorted(cannot & platforms.LEVEL_EXTENSIONS.get(a.goarch, {}).get(built or a.default_level or "",
                                                                             frozenset()))
        missing = ", ".join(lacks) or "an instruction the model advertises"
        if ev.tcg_missing:
            missing += f" (qemu's warning names {', '.join(ev.tcg_missing[:8])})"
        return Verdict(
            "emulation-unsupported",
            f"{what} The binary is {a.goarch} {built}, whose instructions "
            f"{_owner(cell)} has on real hardware, but qemu's TCG cannot provide {missing}: the emulator, not the "
            "binary, is at fault." + (
                "" if fault is None else f" The faulting instruction is {fault.line()}."),
            _emulation_fix(cell))
    return Verdict("unsupported-cpu", f"{what} The binary was built for {a.goarch} {_level_text(a, ev, built)}; "
                   f"{_cpu_desc(cell)} lacks "
                   + (", ".join(gap) + ", which that level uses." if gap else "instructions it uses.") + seen,
                   _level_fix(cell, built))


def _child_verdict(cell: Cell, ev: Evidence, text: str) -> Verdict | None:
    """A cell that exited by itself, but a process it started could not run on the cell's CPU.

    qemu-user emulates one process: a child runs under the cell's qemu and model only through a
    binfmt_misc handler (engines/children.py says which, in `ev.children`).
    """
    a = cell.target.facts
    how = f" Children: {ev.children}." if ev.children else ""
    for rx in _CHILD_ENOEXEC:
        if m := rx.search(text):
            child, line = m.group(1), _first(text, m.group(0)).strip()
            if ev.children and ev.children.startswith("private"):
                why = (f"the kernel found no handler for it: it is not an executable of {a.goarch} (a real "
                       f"{a.goarch} machine cannot run it either)")
                fix = f"ship {child} built for {cell.target.spec} in the image"
            else:
                why = (f"the kernel runs a foreign-arch child only through a binfmt_misc handler, and none "
                       f"runs {a.goarch} executables here")
                fix = (f"register qemu's binfmt_misc handlers: {install.binfmt_enable(a.qemu or a.goarch)} "
                       "(`xrun doctor` shows what this machine has)")
            return Verdict("exec-format-error", f"a child process, {child}, could not be executed: '{line[:200]}'; "
                           f"{why}.{how}", fix)
    built = ev.artifact.go_level or cell.target.level
    m64 = _GO_AMD64.search(text)
    if m64 and built and m64.group(1) != built:
        return Verdict("unsupported-cpu",
                       f"a child process refused to start: '{m64.group(0)}'; the program itself is {a.goarch} "
                       f"{built} and ran on {cell.cpu or 'the host CPU'}, but the child it started is built for "
                       f"{m64.group(1)}.{how}", "build the child program for the oldest CPU you ship to: "
                       + _level_fix(cell, m64.group(1)))
    if (sm := _CHILD_SIGNAL.search(text)) is not None:
        sig = int(sm.group(1))
        what = (f"a child process died of {signame(sig)} ({sm.group(2)}) under -cpu {cell.cpu or 'native'} "
                f"('{sm.group(0)}'), and the program exited with status {ev.exit_code}.{how}")
        if sig == _signal.SIGILL:
            return Verdict("unsupported-cpu", what + f" The program itself ({a.goarch} {built or 'default'}) "
                           f"runs on {cell.cpu}; the child uses an instruction {_cpu_desc(cell)} lacks.",
                           "build the child program for the oldest CPU you ship to: " + _level_fix(cell, None))
        return Verdict("crashed", what, "reproduce the child alone with the same -cpu model (`xrun exec`)")
    return None


def _owner(cell: Cell) -> str:
    """Whose CPU it is: the machine's name for a machine profile, else the qemu model."""
    return f"{cell.profile.name} ({cell.cpu})" if cell.machine is not None else cell.cpu


def _cpu_desc(cell: Cell) -> str:
    if cell.machine is not None:
        return f"{cell.profile.name} (emulated as -cpu {cell.cpu})"
    model = cell.target.facts.model(cell.cpu)
    return f"qemu CPU model {cell.cpu}" + (f" (runs up to {cell.target.facts.goarch} {model.level})"
                                           if model and model.level else "")


def _level_text(a: platforms.Arch, ev: Evidence, built: str | None) -> str:
    """GOARM=7 as the build info says, else the level."""
    setting = ev.artifact.build.setting(a.level_var) if ev.artifact.build and a.level_var else None
    return f"{a.level_var}={setting}" if setting else f"level {built or 'default'}"


def _emulation_fix(cell: Cell) -> str:
    return (f"test {cell.target.spec} on real hardware of that level (the `host` profile runs it natively "
            f"when this machine has the features), or drop the {cell.profile.name} profile for this target "
            "(or list the cell under xfail with verdict emulation-unsupported)")


def _level_fix(cell: Cell, built: str | None) -> str:
    a = cell.target.facts
    prof = cell.profile.name
    if (mach := cell.machine) is not None and a.levels:
        return advice.build_for_machine(prof, cell.cpu, cell.target.os, a, machine_level(mach),
                                        machine_level_gap(mach, built) or (), built)
    model = a.model(cell.cpu)
    if model and model.level and model.level in a.levels:
        fix = advice.build_for_model(prof, cell.cpu, cell.target.os, a, model.level)
        if built and a.level_index(built) > a.level_index(model.level):
            fix += f" instead of {built}; keep a separate {built} artifact only for machines you know have it"
        return fix
    if a.levels and not (model and model.level is None):
        lower = a.levels[max(0, a.level_index(built) - 1)]
        return (f"build for an older level that {cell.cpu} implements, e.g. {cell.target.os}/{a.goarch}/{lower} "
                f"({advice.level_setting(a, lower)}), or drop the {prof} profile if you do not ship to that CPU")
    return f"this {a.goarch} CPU model cannot run Go binaries; profile {prof} should name a newer model"


def _fault_verdict(cell: Cell, ev: Evidence, what: str, fault: Fault, built: str | None) -> Verdict:
    a = cell.target.facts
    ext = fault.extension
    if fault.model_has_extension:
        tcg = ext in platforms.TCG_LACKS.get(a.goarch, frozenset())
        mach = cell.machine
        if mach is not None:
            return Verdict("emulation-unsupported",
                           f"{what} {fault.line()}. {cell.profile.name} has {ext}, but qemu (-cpu {cell.cpu}) "
                           "cannot give it: the emulator, not the binary, is at fault.", _emulation_fix(cell))
        return Verdict("emulation-unsupported",
                       f"{what} {fault.line()}. qemu's TCG cannot execute {ext}"
                       + ("" if tcg else " here") + ": the emulator, not the binary, is at fault.",
                       _emulation_fix(cell))
    origin = {"go-asm": "hand-written Go assembly", "cgo-c": "C code linked through cgo",
              "go-runtime": "the Go runtime", "go-user": "Go code the compiler generated",
              "native": "a program not built by Go"}.get(fault.origin,
                                                                                                "code of unknown origin")
    text = f"{what} {fault.line()}. The instruction is in {origin}"
    at = f"in {fault.symbol or 'that code'} ({fault.location or 'see the trace'})"
    if fault.origin == "go-asm":
        text += f"; the binary's Go level ({built or 'default'}) does not cover it: the binary, not the emulator, is at fault."
        flag = platforms.XSYS_CPU.get(ext or "")
        fix = (f"{at}: check the CPU before using {ext} (golang.org/x/sys/cpu"
               + (f": {flag}" if flag else "")
               + f") and keep a fallback; or drop the {cell.profile.name} profile if you never ship "
               f"to {cell.cpu}-class machines")
    elif fault.origin == "native" or ev.artifact.build is None:
        text += "; its compiler flags chose that instruction: the binary, not the emulator, is at fault."
        model = a.model(cell.cpu)
        flag = advice.c_compiler_flag(a, model.level if model else None)
        fix = (f"{at}: compile for the oldest CPU you ship to"
               + (f" ({flag} runs on {cell.cpu})" if flag else "")
               + f" instead of a -march/-mcpu that implies {ext}, or dispatch on the CPU at run time; "
               f"or drop the {cell.profile.name} profile")
    elif fault.origin == "cgo-c":
        text += (f"; the binary's Go level ({built or 'default'}) does not govern C code: the binary, not the "
                 "emulator, is at fault.")
        fix = (f"{at}: compile the C code for the oldest CPU you ship to (drop -mavx2/-march=... from CGO_CFLAGS "
               f"or the #cgo CFLAGS line) or dispatch on the CPU at run time; or drop the {cell.profile.name} profile")
    else:
        text += f", built for {a.goarch} {_level_text(a, ev, built)}: the binary, not the emulator, is at fault."
        fix = _level_fix(cell, built)
    return Verdict("unsupported-cpu", text, fix)


def classify(cell: Cell, ev: Evidence, expect: Expect, timeout: float) -> Verdict:
    """One verdict of contract §2 for one cell, naming the evidence and a concrete fix."""
    facts = ev.artifact
    a = cell.target.facts
    err = ev.stderr
    out = ev.stdout

    if ev.infra:
        return Verdict("infra-error", f"the runner failed: {ev.infra}", ev.infra_fix)
    if not cell.target.runnable:
        o = platforms.OSES[cell.target.os]
        return Verdict("not-runnable", o.why_not, "the build and artifact checks still cover this target")
    if (fv := foreign_verdict(cell, ev)) is not None:
        return Verdict(*fv)

    if not ev.ran and ev.loader_missing is None:
        return Verdict("exec-format-error",
                       f"the artifact is {facts.describe()}; a {platforms.host_goarch()} machine cannot execute "
                       "it (this host's binfmt_misc could run it under qemu and hide the mismatch)",
                       _mismatch_fix(cell, facts))
    m_interp = _QEMU_NO_INTERP.search(err) if ev.exit_code == 255 else None
    if ev.loader_missing is not None or m_interp:
        interp = ev.loader_missing or (m_interp.group(1) if m_interp else "?")
        cgo = facts.build.setting("CGO_ENABLED") if facts.build else None
        pie = facts.build.setting("-buildmode") == "pie" if facts.build else False
        musl = "musl" in interp
        img = "alpine" if musl else "distroless-base (glibc)"
        why = ("cgo is on (CGO_ENABLED=1), so the binary links the C library dynamically" if cgo == "1"
               else "it was built with -buildmode=pie, which needs a loader even with CGO_ENABLED=0" if pie
               else "it is dynamically linked")
        fix = advice.loader_fix(interp, cgo == "1", pie, img)
        return Verdict("missing-loader",
                       f"the ELF names the dynamic loader {interp} (PT_INTERP) and image {cell.image} has no such "
                       f"file; {why}. The kernel and docker report this as 'no such file or directory'.", fix)

    if (limit := _limit_struck(ev, expect)) is not None:
        return limit
    if ev.timed_out:
        return Verdict("timeout",
                       f"did not finish within run.timeout={timeout:g}s; xrun killed its whole process tree "
                       f"(last output: {_tail(out + err) or 'none'})",
                       "raise run.timeout if it is just slow under emulation (qemu runs Go 20-50x slower than "
                       "native), otherwise look for a wait on stdin, the network (cells have none) or a child")

    if _QEMU_BAD_ELF in err or (ev.exit_code == 255 and "Exec format error" in err):
        return Verdict("exec-format-error",
                       f"qemu-{a.qemu} refused the file: '{_first(err, 'ELF')}'. The artifact is {facts.describe()}, "
                       f"not a {cell.target.spec} executable.", _mismatch_fix(cell, facts))
    if m := _QEMU_NO_MODEL.search(err):
        return Verdict("emulation-unsupported",
                       f"qemu-{a.qemu} has no CPU model '{m.group(1)}' ('{_first(err, 'unable to find')}')",
                       f"pick a model that `qemu-{a.qemu}-static -cpu help` lists for profile {cell.profile.name}")
    if any(s in err for s in _QEMU_FEATURES) and ev.exit_code == 1:
        line = next(_first(err, s) for s in _QEMU_FEATURES if s in err)
        return Verdict("emulation-unsupported",
                       f"qemu-{a.qemu} cannot provide CPU model {cell.cpu} here: '{line[:200]}'",
                       f"use a model this qemu can provide (the baseline for {a.goarch} is "
                       f"{a.baseline_model(cell.target.level)}), or run on real hardware")

    libs = _GLIBC_LIB.findall(err) + _MUSL_LIB.findall(err)
    vers = GLIBC_VERSION_MISSING.findall(err)
    syms = MUSL_SYMBOL_MISSING.findall(err)
    if libs or vers or syms or _ISA_LEVEL in err:
        if _ISA_LEVEL in err:
            return _cpu_verdict(cell, ev, f"glibc's loader refused it: '{_ISA_LEVEL}'.")
        if not libs:
            return _unbound_symbols(cell, ev, vers, syms)
        provider = next((img for lib in libs for pre, img in _LIB_IMAGES if lib.startswith(pre)), None)
        return Verdict("missing-library",
                       f"the loader ran but could not find {', '.join(dict.fromkeys(libs))} "
                       f"(stderr: '{_tail(err, 2)}')",
                       "build with CGO_ENABLED=0 for a static binary, or use an image that provides "
                       + ", ".join(dict.fromkeys(libs))
                       + (f" ({provider} has it)" if provider and provider != cell.image else ""))

    failing = ev.exit_code != expect.exit or (expect.stdout is not None and not re.search(expect.stdout, ev.stdout))
    if ev.signal is None and failing and (cv := _child_verdict(cell, ev, err + "\n" + ev.stdout)) is not None:
        return cv
    m64 = _GO_AMD64.search(err)
    if m64 or (any(s in err for s in _GO_CPU_MSGS) and ev.exit_code == 1):
        msg = m64.group(0) if m64 else next(_first(err, s) for s in _GO_CPU_MSGS if s in err)
        return _cpu_verdict(cell, ev, f"the Go runtime refused to start: '{msg.strip()}'.")
    if ev.signal == _signal.SIGILL:
        qmsg = (f"'{_first(err, 'uncaught target signal')}'" if "uncaught target signal" in err
                else "see its message above" if STDERR_TO_TERMINAL in ev.notes
                else "no message")
        return _cpu_verdict(cell, ev, f"killed by SIGILL (illegal instruction) under -cpu {cell.cpu or 'native'} "
                                      f"(emulator said: {qmsg}).")
    if _GO_SIGILL.search(err):
        return _cpu_verdict(cell, ev, "the Go runtime panicked with 'SIGILL: illegal instruction'.")

    if ev.signal == _signal.SIGPIPE:
        # not a crash: the reader of its output left first (`| head`, a pager that quit)
        return Verdict("exit-status", advice.broken_pipe_why(expect.exit, _said(ev)), advice.BROKEN_PIPE_FIX)
    at = f" {ev.fault.line()} ({'from the guest core' if ev.fault.source == 'core-dump' else 'Go said'})." \
        if ev.fault is not None else ""
    if ev.signal is not None:
        return Verdict("crashed", f"killed by {signame(ev.signal)} ({_said(ev)}).{at}",
                       "reproduce with the same binary and -cpu model: `xrun exec` runs one cell; look for "
                       "memory corruption or unsafe/cgo code")
    if fm := _GO_FATAL.search(err):
        first = err[fm.start():].splitlines()
        head = first[0].strip() if first else "panic"
        where = next((ln.strip() for ln in first[1:] if ln.startswith("\t") or ".go:" in ln), "")
        return Verdict("crashed",
                       f"the Go runtime reported '{head}'" + (f" at {where}" if where else "")
                       + f" (exit {ev.exit_code}).{at}",
                       "fix the panic in the program: the goroutine trace is in the cell's stderr")

    if ev.exit_code != expect.exit:
        denied = any(s in err for s in _WRITE_DENIED) or "permission denied" in err.lower()
        as_user = (f" It ran as {ev.user}; xrun runs images read-only, as `docker run --read-only` does, "
                   "with a writable /tmp.") if ev.user and denied else ""
        return Verdict("exit-status",
                       f"exited with status {ev.exit_code}, expected {expect.exit} ({_said(ev)}).{as_user}",
                       (_USER_FIX if as_user else None) or _scratch_hint(err + "\n" + ev.stdout, cell)
                       or "see stderr; if the status is intended, set run.expect.exit")
    if expect.stdout is not None and not re.search(expect.stdout, out):
        return Verdict("wrong-output",
                       f"exit status {ev.exit_code} as expected, but stdout does not match "
                       f"{expect.stdout!r} (stdout: '{_tail(out) or 'empty'}')",
                       "fix the output, or the pattern in run.expect.stdout (a Python re.search)")
    return Verdict("ok")


def _said(ev: Evidence) -> str:
    """What the program said last: its stderr tail, else its stdout tail (many tools report errors there)."""
    if ev.stderr.strip():
        return f"stderr: '{_tail(ev.stderr)}'"
    if ev.stdout.strip():
        return f"stderr empty; stdout: '{_tail(ev.stdout)}'"
    return "no output on stdout or stderr"


_OUT_OF_MEMORY = ("runtime: out of memory", "cannot allocate memory", "std::bad_alloc", "MemoryError")
_NO_PROCESSES = ("resource temporarily unavailable", "failed to create new OS thread", "Resource temporarily "
                 "unavailable", "pthread_create failed", "fatal error: newosproc")
_RAISE = "raise run.limits.{key} in the matrix if the program legitimately needs more"


def _limit_struck(ev: Evidence, expect: Expect) -> Verdict | None:
    """A resource limit xrun set stopped the cell: say which, with the number, instead of a generic crash."""
    if ev.output_limited:
        cap = size_text(ev.limits.limits.output) if ev.limits else "the"
        return Verdict("crashed", f"xrun stopped the cell: stdout and stderr together passed the output limit "
                       f"{cap} (run.limits.output), so its whole process tree was killed",
                       "make the program write less (a loop printing without end?), or "
                       + _RAISE.format(key="output"))
    lim = ev.limits
    if lim is None:
        return None
    failed = ev.timed_out or ev.signal is not None or ev.exit_code != expect.exit
    text = ev.stderr + ev.stdout
    if lim.oom_killed or (failed and lim.memory_by == "RLIMIT_DATA" and any(s in text for s in _OUT_OF_MEMORY)):
        how = ("the kernel's OOM killer stopped it" if lim.oom_killed else
               f"an allocation failed ('{_first(text, next(s for s in _OUT_OF_MEMORY if s in text))[:160]}')")
        return Verdict("crashed", f"the cell ran out of memory at its {size_text(lim.limits.memory)} limit "
                       f"(run.limits.memory, enforced by {lim.memory_by}): {how}",
                       "find what grows without bound (a leak, an input loaded whole), or " + _RAISE.format(key="memory"))
    # a counter says so (cgroup), else the program's own words under an enforced limit (rlimit, docker
    # container mode, whose cgroup is gone by the time xrun could read it)
    if failed and (lim.pids_hit or (lim.pids_enforced and any(s in text for s in _NO_PROCESSES))):
        return Verdict("crashed", f"the cell reached its limit of {lim.limits.pids} processes and threads "
                       f"(run.limits.pids, {lim.pids_by}): the kernel refused to create more"
                       + (f" ('{_first(text, next(s for s in _NO_PROCESSES if s in text))[:160]}')"
                          if any(s in text for s in _NO_PROCESSES) else ""),
                       "look for unbounded process or thread creation (a fork loop, a goroutine per item "
                       "locked to a thread), or " + _RAISE.format(key="pids"))
    return None


def _scratch_hint(err: str, cell: Cell) -> str | None:
    """A missing-file failure in a minimal image: name the file and the fix (the verdict stays)."""
    if "x509: certificate signed by unknown authority" in err or "x509: failed to load system roots" in err:
        return (f"image {cell.image} has no CA bundle (/etc/ssl/certs/ca-certificates.crt): use "
                "distroless-static or alpine, or embed roots (import golang.org/x/crypto/x509roots/fallback)")
    if "unknown time zone" in err or "no such location" in err:     # Go's LoadLocation; ivy's wrapping of it
        return (f"image {cell.image} has no /usr/share/zoneinfo: build with -tags timetzdata (or import "
                "time/tzdata), or use distroless-static or alpine")
    if "user: unknown userid" in err or "requires cgo or $USER" in err:
        return f"image {cell.image} has no /etc/passwd entry: use distroless-static or alpine, or set $USER/$HOME"
    if (m := _RAN_MISSING.search(err)) is not None:
        prog = m.group(1) or m.group(2)
        shell = prog.rsplit("/", 1)[-1] in ("sh", "bash", "ash")
        return (f"image {cell.image} has no {prog}: the program ran {prog}, which {cell.image} lacks: "
                + ("use an image with a shell (alpine: busybox /bin/sh; `xrun exec --image alpine`)" if shell else
                   f"use an image that has {prog}, or skip what needs it when it is absent"))
    return None


# the program started another that the image does not have (Go's os/exec and fork/exec wording)
_RAN_MISSING = re.compile(r'exec: "([^"]+)": executable file not found in \$PATH|fork/exec (/[^:\s]+): no such file '
                          r"or directory")
