"""Child processes (issue 14), the pure parts: binfmt_misc magic per arch, the tagged copies that no
handler matches, reading the host's handlers, and the verdicts for a child that could not run."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from test_classify import cell, ev, facts, verdict

from xarch import platforms
from xarch.engines import children
from xarch.plan import Expect

CONFS = Path("/usr/lib/binfmt.d")


# qemu-user-static has no handler for x86 (an x86 host runs those natively): children.py makes its own
@pytest.mark.parametrize("goarch", [g for g, a in platforms.ARCHES.items() if a.qemu and g not in ("amd64", "386")])
def test_magic_matches_what_debians_handler_matches(goarch):
    conf = CONFS / f"qemu-{platforms.arch(goarch).qemu}.conf"
    if not conf.is_file():
        pytest.skip(f"no {conf}: `apt-get install qemu-user-static`")
    fields = conf.read_text().strip().split(":")
    dm, dk = codecs.escape_decode(fields[4])[0], codecs.escape_decode(fields[5])[0]
    magic, mask = children._magic(goarch, None)
    n = min(len(dm), len(magic))
    assert all(magic[i] & dk[i] == dm[i] & dk[i] for i in range(n)), goarch
    assert all(mask[i] & dk[i] == dk[i] for i in range(n) if i != 7)   # at least as strict but for OSABI


def test_osabi_handlers_match_linux_binaries_but_not_the_tagged_copies(tmp_path, monkeypatch):
    magic0, mask0 = children._magic("amd64", 0x00)
    magic3, _ = children._magic("amd64", 0x03)
    assert magic0[7] == 0 and magic3[7] == 3 and mask0[7] == 0xFF
    exe = tmp_path / "tool"
    exe.write_bytes(b"\x7fELF\x02\x01\x01\x03" + bytes(8) + b"\x03\x00\x3e\x00" + b"rest")
    exe.chmod(0o755)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tagged = Path(children._tagged(str(exe)))
    data = tagged.read_bytes()
    assert data[7] == children.OSABI_TAG and data[:7] + data[8:] == exe.read_bytes()[:7] + exe.read_bytes()[8:]
    assert tagged.stat().st_mode & 0o111 and children._tagged(str(exe)) == str(tagged)
    for magic, mask in (children._magic("amd64", 0), children._magic("amd64", 3)):
        assert any(data[i] & mask[i] != magic[i] for i in range(20))           # no handler takes it
    assert all(exe.read_bytes()[i] & m == g for i, (g, m) in enumerate(zip(magic3, children._magic("amd64", 3)[1],
                                                                            strict=True)))


_HOST_HANDLER = ("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: {flags}\noffset 0\n"
                 "magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n")


@pytest.mark.parametrize(("flags", "binfmt"), [("OPF", "host"), ("P", "none")])
def test_the_hosts_handler_is_used_only_with_flag_f(tmp_path, monkeypatch, flags, binfmt):
    (tmp_path / "qemu-aarch64").write_text(_HOST_HANDLER.format(flags=flags))
    (tmp_path / "status").write_text("enabled\n")
    monkeypatch.setattr(children, "_BINFMT", str(tmp_path))
    monkeypatch.setenv("XARCH_CHILDREN", "host")
    kids = children.plan("arm64", "cortex-a53", tmp_path, "/usr/bin/bwrap")
    assert kids.binfmt == binfmt and kids.prefix == () and kids.env == (("QEMU_CPU", "cortex-a53"),)
    if binfmt == "host":
        assert kids.how.startswith("host binfmt_misc handler qemu-aarch64 (flags OPF)") and "QEMU_CPU" in kids.how
    else:
        assert "lacks flag F" in kids.how
    # an arm handler does not serve riscv64
    assert children.plan("riscv64", "rv64", tmp_path, "/usr/bin/bwrap").how.startswith("no binfmt_misc handler")


def _linux(spec: str, cpu: str, profile: str, goarch: str, var: str, level: str, image: str = "alpine"):
    c = cell(spec, cpu, profile, image=image)
    return c, facts(goarch, var, level)


@pytest.mark.parametrize("stderr", [
    "children: child failed: fork/exec /bin/sh: exec format error\n",
    "bash: line 1: /bin/helper: cannot execute binary file: Exec format error\n",
    "/usr/bin/helper: line 1: \x7fELF\x02\x01\x01: not found\n",
])
def test_a_child_that_cannot_be_executed_names_the_child_and_the_fix(stderr):
    c, f = _linux("linux/arm64", "cortex-a53", "baseline", "arm64", "GOARM64", "v8.0")
    e = ev(c, f, exit_code=1, stderr=stderr, children="no binfmt_misc handler for arm64: ...")
    v = verdict(c, e, Expect(0, "^hi"))
    assert v.verdict == "exec-format-error", v
    assert v.explanation.startswith("a child process, /"), v.explanation
    assert "binfmt_misc handler" in v.explanation and "update-binfmts --enable qemu-aarch64" in v.fix


def test_with_private_handlers_an_unexecutable_child_is_of_another_arch():
    c, f = _linux("linux/arm64", "cortex-a53", "baseline", "arm64", "GOARM64", "v8.0")
    e = ev(c, f, exit_code=1, stderr="fork/exec /opt/x86tool: exec format error\n", children="private binfmt_misc: ...")
    v = verdict(c, e, Expect(0, None))
    assert v.verdict == "exec-format-error" and "not an executable of arm64" in v.explanation
    assert v.fix == "ship /opt/x86tool built for linux/arm64 in the image"


def test_a_child_killed_by_sigill_is_unsupported_cpu_blamed_on_the_child():
    c, f = _linux("linux/arm/v6", "arm1176", "pi-zero", "arm", "GOARM", "6")
    err = "qemu: uncaught target signal 4 (Illegal instruction) - core dumped\nchildren: child failed: signal: illegal instruction\n"
    v = verdict(c, ev(c, f, exit_code=1, stderr=err, children="private binfmt_misc: ... QEMU_CPU=arm1176"))
    assert v.verdict == "unsupported-cpu"
    assert v.explanation.startswith("a child process died of SIGILL (Illegal instruction) under -cpu arm1176")
    assert "The program itself (arm v6) runs on arm1176" in v.explanation and "GOARM=6" in v.fix


def test_a_child_refusing_a_newer_amd64_level_is_unsupported_cpu_blamed_on_the_child():
    c, f = _linux("linux/amd64", "Nehalem", "x86-64-v2-vm", "amd64", "GOAMD64", "v1")
    err = ("This program can only be run on AMD64 processors with v3 microarchitecture support.\n"
           "children: child failed: exit status 1\n")
    v = verdict(c, ev(c, f, exit_code=1, stderr=err))
    assert v.verdict == "unsupported-cpu" and v.explanation.startswith("a child process refused to start")
    assert "built for v3" in v.explanation and "GOAMD64=v2" in v.fix
    # the program itself refusing its own level is not a child's doing
    own = verdict(c, ev(c, facts("amd64", "GOAMD64", "v3"), exit_code=1, stderr=err.splitlines()[0] + "\n"))
    assert own.verdict == "unsupported-cpu" and not own.explanation.startswith("a child")


def test_a_passing_cell_that_mentions_a_child_failure_stays_ok():
    c, f = _linux("linux/arm64", "cortex-a53", "baseline", "arm64", "GOARM64", "v8.0")
    e = ev(c, f, exit_code=0, stdout="hi\n", stderr="fork/exec /opt/optional: exec format error (skipped)\n")
    assert verdict(c, e, Expect(0, "^hi")).verdict == "ok"
