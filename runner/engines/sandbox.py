"""The bubblewrap sandbox every local cell runs in (Linux cells, wine, node, `xrun exec`): one definition.

What a cell gets, and why:
- Its own user, pid, network, ipc, uts and cgroup namespaces; no network at all; uid 0 inside.
- No capabilities (`--cap-drop ALL`, also out of the bounding set, so an exec cannot regain them) and
  no new privileges. This matters when xrun runs as root: uid 0 in the cell is then host uid 0, and
  without this a cell could remount its read-only binds read-write and write the artifact, the shared
  image cache or the emulator the host runs next.
- /proc is read-only: host uid 0 may write host sysctls through /proc/sys (core_pattern!) by file
  mode alone, with no capability at all.
- No further user namespaces (`--disable-userns`), and a seccomp filter that refuses the syscalls a
  contained program has no business making (mount and the new mount API, pivot_root, keyrings,
  ptrace of another process, kernel modules, kexec, bpf, perf, userfaultfd, namespaces, reboot, clock
  and swap changes...), in the spirit of docker's default profile; io_uring and clone3 answer ENOSYS
  so libc and runtimes fall back to what the filter can see.
- A tmpfs /tmp no larger than the memory limit; everything else is a read-only bind.
"""

from __future__ import annotations

import errno
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import install, platforms, proc
from .execplan import env_args as env_args  # the pure pieces of a command line live there
from .execplan import tmpfs_args as tmpfs_args

BWRAP_FIX = f"install bubblewrap: `{install.BWRAP}`"
SECCOMP_FIX = f"install libseccomp: `{install.LIBSECCOMP}` (xarch loads it through pyseccomp)"

# Refused with EPERM (docker's default profile refuses these or lets only CAP_SYS_ADMIN holders call them).
DENY_EPERM = (
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr", "unshare", "setns", "keyctl", "add_key", "request_key",
    "process_vm_readv", "process_vm_writev", "kcmp", "init_module", "finit_module", "delete_module",
    "create_module", "kexec_load", "kexec_file_load", "bpf", "perf_event_open", "userfaultfd", "reboot",
    "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "stime", "iopl", "ioperm", "open_by_handle_at", "name_to_handle_at",
    "lookup_dcookie", "nfsservctl", "uselib", "sysfs", "_sysctl", "vm86", "vm86old", "syslog",
    "fanotify_init",
)
DENY_ENOSYS = ("io_uring_setup", "io_uring_enter", "io_uring_register", "clone3")
_PTRACE_TRACEME = 0
_CLONE_NS_FLAGS = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                   0x00000080)   # NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET NEWTIME


@functools.lru_cache(maxsize=1)
def seccomp_program() -> bytes | str:
    """The compiled filter (BPF for this host's syscall ABIs), or why there is none."""
    try:
        import pyseccomp as sc
    except (ImportError, OSError, RuntimeError) as e:   # the library loads libseccomp.so.2 at import
        return f"no seccomp filter: libseccomp could not be loaded ({e}); {SECCOMP_FIX}"
    f = sc.SyscallFilter(sc.ALLOW)
    if platforms.host_goarch() == "amd64":
        # 32-bit syscalls from a native process (int 0x80) get the same rules; x32 is refused outright
        for extra in (sc.Arch.X86,):
            f.add_arch(extra)
    for names, action in ((DENY_EPERM, sc.ERRNO(errno.EPERM)), (DENY_ENOSYS, sc.ERRNO(errno.ENOSYS))):
        for name in names:
            try:
                f.add_rule(action, name)
            except (OSError, ValueError, RuntimeError):
                continue        # not a syscall of this ABI
    f.add_rule(sc.ERRNO(errno.EPERM), "ptrace", sc.Arg(0, sc.NE, _PTRACE_TRACEME))
    for flag in _CLONE_NS_FLAGS:
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    r, w = os.pipe()
    try:
        with os.fdopen(w, "wb") as out:
            f.export_bpf(out)
        with os.fdopen(r, "rb") as inp:
            return inp.read()
    except OSError as e:
        return f"no seccomp filter: exporting it failed ({e})"


@functools.lru_cache(maxsize=1)
def docker_seccomp_profile() -> str:
    """The same rules as a docker seccomp profile (JSON), so both engines refuse the same syscalls.

    Docker's own default allows ptrace of any process of the same user: in a pooled container a cell
    could then attach to the container's init, which outlives it, and tamper with the next cell.
    """
    arches = {"amd64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
              "arm64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]}.get(platforms.host_goarch(), [])
    eperm, enosys = errno.EPERM, errno.ENOSYS
    rules: list[dict[str, object]] = [
        {"names": list(DENY_EPERM), "action": "SCMP_ACT_ERRNO", "errnoRet": eperm},
        {"names": list(DENY_ENOSYS), "action": "SCMP_ACT_ERRNO", "errnoRet": enosys},
        {"names": ["ptrace"], "action": "SCMP_ACT_ERRNO", "errnoRet": eperm,
         "args": [{"index": 0, "value": _PTRACE_TRACEME, "op": "SCMP_CMP_NE"}]},
    ]
    for flag in _CLONE_NS_FLAGS:
        rules.append({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": eperm,
                      "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]})
    return json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "architectures": arches, "syscalls": rules})


def seccomp_fd() -> tuple[int | None, str | None]:
    """A fresh fd holding the filter for one bwrap (it reads it to the end), or (None, why not)."""
    prog = seccomp_program()
    if isinstance(prog, str):
        return None, prog
    fd = os.memfd_create("xarch-seccomp")     # close-on-exec; handed to bwrap alone via pass_fds
    os.write(fd, prog)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd, None


HOSTNAME = "xarch"
HARDENING = ("no capabilities (--cap-drop ALL), no new privileges", "seccomp filter (mount, ptrace of others, "
             "keyrings, namespaces, modules, bpf, ... refused)", "/proc read-only", "no nested user namespaces")


def write_etc(etc: Path) -> dict[str, str]:
    """The /etc files xarch binds over every cell's (hosts, resolv.conf, hostname), written once into
    `etc`, so name resolution and the hostname behave the same in every engine and runner."""
    files = {"hosts": f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{HOSTNAME}\n",
             "resolv.conf": "# xarch cells have no network\n", "hostname": HOSTNAME + "\n"}
    etc.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if not (etc / name).is_file():      # a lasting dir (execplan.py) is shared: never half-written
            tmp = etc / f".{name}.{os.getpid()}"
            tmp.write_text(text)
            os.replace(tmp, etc / name)
    return {name: str(etc / name) for name in files}


def base_args(*, uid: int = 0, gid: int = 0, seccomp: int | str | None = None,
              hostname: str = HOSTNAME) -> list[str]:
    """The namespace and privilege part of every cell's bwrap command line (before its mounts)."""
    bwrap = proc.which("bwrap", BWRAP_FIX)
    argv = [bwrap, "--unshare-user", "--uid", str(uid), "--gid", str(gid), "--disable-userns",
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--hostname", hostname, "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if seccomp is not None:
        argv += ["--seccomp", str(seccomp)]
    return argv


def proc_dev_args() -> list[str]:
    """/proc (read-only, see above) and a minimal /dev."""
    return ["--proc", "/proc", "--remount-ro", "/proc", "--dev", "/dev"]


_HOST_SYSTEM = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# What a host program (wine, node) reads from /etc to start: the loader's cache, alternatives links,
# fontconfig for wine. Nothing with secrets: passwd/shadow, ssh, credentials stay out.
_HOST_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "fonts", "localtime")


def host_runtime_args(exes: tuple[str, ...], etc_files: Mapping[str, str]) -> list[str]:
    """A root of the host's system directories only (read-only), for cells a host program runs.

    Never the host's `/`: not /root, /home, /etc/shadow, the project, the caches. `exes` outside /usr
    (a node from nvm, say) get their own install directory bound. `etc_files` are injected files
    (name -> host path), such as the cell's /etc/hosts.
    """
    args: list[str] = []
    for name in _HOST_SYSTEM:
        p = f"/{name}"
        if os.path.islink(p):
            args += ["--symlink", os.readlink(p), p]
        elif os.path.isdir(p):
            args += ["--ro-bind", p, p]
    args += ["--tmpfs", "/etc"]
    for name in _HOST_ETC:
        p = f"/etc/{name}"
        if os.path.lexists(p):
            args += ["--ro-bind", p, p]
    for name, src in etc_files.items():
        args += ["--ro-bind", src, f"/etc/{name}"]
    seen: set[str] = set()
    for exe in exes:
        real = os.path.realpath(exe)
        top = real.split("/")[1] if real.startswith("/") else ""
        if top in _HOST_SYSTEM:
            continue
        d = os.path.dirname(os.path.dirname(real))     # <prefix>/bin/node -> <prefix>
        if d and d not in seen:
            seen.add(d)
            args += ["--ro-bind", d, d]
    return args


# the sysctls that decide whether an unprivileged user namespace opens (doctor names the one to change)
USERNS_SYSCTLS = ("kernel/unprivileged_userns_clone", "kernel/apparmor_restrict_unprivileged_userns",
                  "user/max_user_namespaces")


def probe(bwrap: str, env: Mapping[str, str] | None = None) -> proc.Result | str:
    """Whether a bwrap sandbox opens here (the one each local cell gets, minus the image): the finished
    probe, or why it could not start.

    Every run's preflight asks (doctor, then the engine), ~20 ms a probe, so a pass is remembered per
    bwrap file, user namespace sysctls, user and boot (paths.remembered). A failure is asked twice more
    before it counts: seen once in CI, a probe failing while a neighbour's hostile cells loaded the machine.
    """
    from .. import paths

    argv = [bwrap, "--unshare-user", "--unshare-pid", "--unshare-net", "--ro-bind", "/", "/",
            "--proc", "/proc", "--die-with-parent", "true"]

    def ok(v: list[Any] | str) -> bool:
        return not isinstance(v, str) and (r := proc.Result(*v)).returncode == 0 and not r.timed_out

    def ask() -> list[Any] | str:
        try:
            return list(proc.run(argv, env=env, timeout=30))
        except OSError as e:
            return f"cannot execute {bwrap}: {e.strerror or e}"

    def asked() -> list[Any] | str:
        """A result that is not a pass is asked again; after the last attempt it is the answer."""
        from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_fixed

        return Retrying(stop=stop_after_attempt(3), wait=wait_fixed(0.2),
                        retry=retry_if_result(lambda v: not isinstance(v, str) and not ok(v)),
                        retry_error_callback=lambda state: state.outcome.result())(ask)  # type: ignore[union-attr]

    sysctls = []
    for key in USERNS_SYSCTLS:
        try:
            sysctls.append(Path("/proc/sys", key).read_text(encoding="utf-8").strip())
        except OSError:
            sysctls.append("")
    got = paths.remembered("userns", [os.path.realpath(bwrap)], json.dumps([sysctls, os.geteuid()]), asked, keep=ok)
    return got if isinstance(got, str) else proc.Result(*got)
