"""The one subprocess wrapper: resolve first, bound output, kill the whole tree on timeout, keep the signal."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, NamedTuple

from .errors import InfraError

TAIL_BYTES = 64 * 1024

_live: set[subprocess.Popen[bytes]] = set()
_live_lock = threading.Lock()
_stopping = threading.Event()


class Stopped(Exception):
    """Raised instead of starting a process once stop() was called (Ctrl-C)."""


def signame(sig: int) -> str:
    """SIGSEGV, SIGILL, ...: the name of a signal number, or "signal N" for one Python does not know."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class Result(NamedTuple):     # not a dataclass: `xrun exec` starts without importing dataclasses
    """What a finished process left: exit status or signal, bounded output tails, wall time."""

    argv: tuple[str, ...]
    returncode: int | None          # None when killed by a signal
    signal: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    truncated: bool = False
    output_limited: bool = False    # stdout + stderr passed output_limit: the tree was killed there


def which(name: str, fix: str) -> str:
    """Absolute path of an executable, or an InfraError naming how to get it."""
    path = shutil.which(name)
    if path is None:
        raise InfraError(f"'{name}' was not found on PATH", fix)
    return path


class Tail:
    """Keeps the last `limit` bytes of a stream, counting what was dropped (and all bytes seen)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.dropped = 0
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        self.buf += data
        if len(self.buf) > self.limit:
            cut = len(self.buf) - self.limit
            self.dropped += cut
            del self.buf[:cut]

    def text(self) -> str:
        s = self.buf.decode("utf-8", "replace")
        return f"[... {self.dropped} bytes dropped ...]\n{s}" if self.dropped else s


class Output:
    """A process's stdout and stderr under one byte budget: kept whole up to `limit` bytes together
    (tails of `tail_bytes` when there is no limit); what comes after the budget is dropped. Every
    place that reads a cell's output (here, and both docker modes) uses this."""

    def __init__(self, limit: int | None, tail_bytes: int = TAIL_BYTES) -> None:
        keep = max(tail_bytes, limit or 0)
        self.out, self.err = Tail(keep), Tail(keep)
        self.limit = limit
        self._lock = threading.Lock()
        self.limited = False

    def feed(self, tail: Tail, data: bytes) -> bool:
        """Keep data in `tail` (self.out or self.err); True once, when the budget is first passed:
        then the caller stops the process."""
        with self._lock:
            if self.limited:
                return False
            tail.feed(data)
            if self.limit is not None and self.out.total + self.err.total > self.limit:
                self.limited = True
                return True
            return False


def _pump(stream: object, output: Output, tail: Tail, over: Callable[[], None]) -> None:
    read = stream.read1 if hasattr(stream, "read1") else stream.read  # type: ignore[attr-defined]
    while True:
        chunk = read(65536)
        if not chunk:
            return
        if output.feed(tail, chunk):
            over()


def disable_core_dumps() -> None:
    """Children inherit RLIMIT_CORE=0: a core file per crashed cell would litter the cwd, and qemu
    prints its "uncaught target signal" line the same way every time."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str | None = None,
        stdin: str | bytes | None = None, timeout: float | None = None,
        tail_bytes: int = TAIL_BYTES, output_limit: int | None = None,
        preexec_fn: Callable[[], None] | None = None, pass_fds: Sequence[int] = ()) -> Result:
    """Run argv in its own session; on timeout SIGKILL the whole process group.

    With `output_limit`, stdout and stderr are kept whole up to that many bytes together, and the
    tree is killed once it writes more (a cell must not fill the host's memory or disk with output).
    `preexec_fn` runs in the child before exec (it only writes to pre-opened files: see limits.py).
    """
    if _stopping.is_set():
        raise Stopped("xrun is stopping")
    t0 = time.monotonic()
    data = stdin.encode() if isinstance(stdin, str) else stdin
    proc = subprocess.Popen(list(argv), env=dict(env) if env is not None else None, cwd=cwd,
                            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=preexec_fn, pass_fds=tuple(pass_fds))
    with _live_lock:
        _live.add(proc)
        if _stopping.is_set():
            kill_tree(proc)
    output = Output(output_limit, tail_bytes)
    out, err = output.out, output.err
    readers = [threading.Thread(target=_pump, args=(s, output, t, lambda: kill_tree(proc)), daemon=True)
               for s, t in ((proc.stdout, out), (proc.stderr, err))]
    for r in readers:
        r.start()
    if data is not None:
        def feed() -> None:
            try:
                assert proc.stdin is not None
                proc.stdin.write(data)
                proc.stdin.close()
            except OSError:     # the child may exit without reading its input
                pass
        threading.Thread(target=feed, daemon=True).start()
    # A blocking wait plus a timer: Popen.wait(timeout=) polls with sleeps of up to 50 ms, which
    # would add that much to every cell.
    fired = threading.Event()

    def on_timeout() -> None:
        fired.set()
        kill_tree(proc)

    timer = threading.Timer(timeout, on_timeout) if timeout is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        with _live_lock:
            _live.discard(proc)
    timed_out = fired.is_set()
    for r in readers:
        r.join(timeout=5)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    rc = proc.returncode
    sig = -rc if rc < 0 else None
    return Result(tuple(argv), None if sig else rc, sig, out.text(), err.text(),
                  time.monotonic() - t0, timed_out, bool(out.dropped or err.dropped), output.limited)


def run_attached(argv: Sequence[str], *, timeout: float | None = None,
                 preexec_fn: Callable[[], None] | None = None, pass_fds: Sequence[int] = (),
                 stderr_tail: bytearray | None = None, stdout_tail: bytearray | None = None) -> tuple[int, bool]:
    """Run argv with this process's stdin/stdout/stderr (`xrun exec`: a test's output streams through
    as it happens) in its own session; (returncode, timed_out). Ctrl-C and the timeout kill its tree.

    With `stderr_tail` (`stdout_tail`), stderr (stdout) goes through a pipe that is copied to ours as
    it comes, and its last 64 KiB are kept there (what the Go runtime, qemu or a failing test said)."""
    if _stopping.is_set():
        raise Stopped("xrun is stopping")
    proc = subprocess.Popen(list(argv), start_new_session=True, preexec_fn=preexec_fn, pass_fds=tuple(pass_fds),
                            stderr=subprocess.PIPE if stderr_tail is not None else None,
                            stdout=subprocess.PIPE if stdout_tail is not None else None)
    copiers = []
    for pipe, tail, out in ((proc.stderr, stderr_tail, sys.stderr), (proc.stdout, stdout_tail, sys.stdout)):
        if pipe is not None and tail is not None:
            t = threading.Thread(target=_copy_tail, args=(pipe, tail, out), daemon=True)
            t.start()
            copiers.append(t)
    with _live_lock:
        _live.add(proc)
    try:
        try:
            rc = proc.wait(timeout=timeout)
            for t in copiers:
                t.join(timeout=5)
            return rc, False
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            return proc.wait(), True
        except BaseException:
            kill_tree(proc)
            proc.wait()
            raise
    finally:
        with _live_lock:
            _live.discard(proc)


def _copy_tail(src: IO[bytes], tail: bytearray, to: IO[str], keep: int = 64 << 10) -> None:
    """Copy a child's pipe to our stream, keeping its tail. When our stream is gone (a reader that
    quit: EPIPE), the pipe is closed, so the child meets the closed pipe as it would natively instead
    of blocking on a full one."""
    out = getattr(to, "buffer", None)
    fd = src.fileno()
    while chunk := os.read(fd, 1 << 16):
        tail += chunk
        if len(tail) > keep:
            del tail[: len(tail) - keep]
        if out is not None:
            try:
                out.write(chunk)
                out.flush()
            except (BrokenPipeError, ValueError, OSError):
                src.close()
                return


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group the child leads (it was started in a new session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def kill_all() -> None:
    """Kill every process tree still running."""
    with _live_lock:
        procs = list(_live)
    for p in procs:
        kill_tree(p)


def stop() -> None:
    """Ctrl-C: kill what runs and refuse to start anything more."""
    _stopping.set()
    kill_all()


def stopping() -> bool:
    """Whether stop() was called (Ctrl-C): long waits elsewhere should give up."""
    return _stopping.is_set()


def reset() -> None:
    """Allow processes again (for a new run in the same interpreter, e.g. under pytest)."""
    _stopping.clear()
