"""Machines from /proc/cpuinfo (runner/profiles/): parsing each arch's format, choosing the qemu model and
toggles, and refusing what no CPU is. Pure logic over recorded captures; the e2e file runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from xarch.errors import ConfigError
from xarch.profiles import CATALOGUE, parse_cpuinfo, resolve_machine, resolved_catalogue
from xarch.profiles.capture import first_cpu
from xarch.profiles.machine import from_cpu, machine_level

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "cpuinfo"


def test_an_x86_vm_capture_is_its_features_and_the_closest_model():
    m = parse_cpuinfo((FIX / "db-vm.txt").read_text(), "db-vm.txt")
    assert set(m.features) == {"amd64", "386"}
    r = resolve_machine(m)["amd64"]
    assert r.cpu == "IvyBridge" and not r.missing and not r.extra
    assert {"AVX", "F16C", "RDRAND"} <= r.features and "AVX2" not in r.features
    assert machine_level(r) == "v2"


def test_a_vm_that_hides_avx_gets_it_removed_from_the_model():
    flags = (FIX / "db-vm.txt").read_text().replace(" xsave avx f16c", "", 2)
    r = resolve_machine(parse_cpuinfo(flags, "hidden.txt"))["amd64"]
    assert "AVX" not in r.emulated and "AVX" not in r.features
    assert r.cpu in ("Westmere,+rdrand", "IvyBridge,-f16c,-avx,-xsave"), r.cpu


def test_arm64_cpu_part_picks_the_core_and_32_bit_userland_follows():
    m = parse_cpuinfo((FIX / "edge-a72.txt").read_text(), "edge")
    res = resolve_machine(m)
    assert res["arm64"].cpu == "cortex-a72" and "LSE" not in res["arm64"].features
    assert res["arm64"].extra == ("ARMv8 crypto",)      # qemu's A72 has crypto; this SoC does not
    assert machine_level(res["arm64"]) == "v8.0"
    assert machine_level(res["arm"]) == "v7"


def test_a_32_bit_pi_zero_capture_is_armv6():
    text = ("processor\t: 0\nmodel name\t: ARMv6-compatible processor rev 7 (v6l)\nFeatures\t: half thumb fastmult "
            "vfp edsp java tls\nCPU implementer\t: 0x41\nCPU architecture: 7\nCPU part\t: 0xb76\n\nHardware\t: BCM2835\n")
    r = resolve_machine(parse_cpuinfo(text, "zero"))
    assert list(r) == ["arm"] and r["arm"].cpu == "arm1176" and machine_level(r["arm"]) == "v6"


def test_riscv_power_and_s390x_captures():
    rv = resolve_machine(parse_cpuinfo("processor\t: 0\nisa\t\t: rv64imafdc_zicsr_zba_zbb\n", "rv"))["riscv64"]
    assert rv.cpu == "rv64" and machine_level(rv) == "rva22u64"
    gc = resolve_machine(parse_cpuinfo("isa : rv64gc\n", "gc"))["riscv64"]
    assert gc.cpu == "sifive-u54" and machine_level(gc) == "rva20u64"
    p9 = resolve_machine(parse_cpuinfo("cpu\t\t: POWER9 (raw), altivec supported\n", "p9"))
    assert p9["ppc64le"].cpu == "power9"
    z = resolve_machine(parse_cpuinfo("vendor_id : IBM/S390\nfeatures\t: esan3 zarch stfle vx vxe\n", "z"))
    assert z["s390x"].cpu == "qemu,vxeh=on"


@pytest.mark.parametrize(("text", "want"), [
    ("eggs\nmilk\n", "shop.txt: not a /proc/cpuinfo"),
    ("vendor_id : GenuineIntel\nflags : sse sse2 lm avx2\n", "shop.txt:2: flags: lists AVX2 without AVX"),
    ("cpu : POWER5+\n", "shop.txt:1: cpu: 'POWER5+' is no POWER generation"),
    ("key : value\n", "shop.txt: no line xarch reads a CPU from"),
])
def test_what_no_cpu_is_is_refused_naming_file_and_line(text, want):
    with pytest.raises(ConfigError) as e:
        parse_cpuinfo(text, "shop.txt")
    assert str(e.value).startswith(want), str(e.value)


def test_toggles_complete_their_dependencies():
    r = from_cpu("amd64", "Westmere,+avx2")
    assert r is not None and r.cpu == "Westmere,+xsave,+avx,+avx2" and "AVX2" in r.features
    down = from_cpu("amd64", "Haswell,-avx")
    assert down is not None and {"AVX", "AVX2", "FMA", "F16C"}.isdisjoint(down.features)
    wide = from_cpu("amd64", "Haswell,+avx512f")
    assert wide is not None and wide.missing == ("AVX-512F",)      # TCG cannot: emulation-unsupported
    assert from_cpu("amd64", "Nehalem") is None and from_cpu("amd64", "NoSuchCPU,+avx") is None
    keep = from_cpu("amd64", "Nehalem,+erms")       # a toggle xarch does not track goes to qemu as written
    assert keep is not None and keep.cpu == "Nehalem,+erms"


def test_every_catalogue_entry_resolves_and_says_where_its_features_come_from():
    for name, e in CATALOGUE.items():
        res = resolved_catalogue(name)
        assert set(e.levels) <= set(res), name
        assert e.source and e.description, name
    assert resolved_catalogue("pi-zero")["arm"].cpu == "arm1176"
    assert resolved_catalogue("graviton2")["arm64"].cpu == "neoverse-n1"
    assert resolved_catalogue("xeon-skylake-sp")["amd64"].missing == ("AVX-512F",)
    assert "SVE" in resolved_catalogue("graviton3")["arm64"].emulated


def test_capture_keeps_the_first_cpu_and_the_machine_lines():
    text = (FIX / "edge-a72.txt").read_text()
    out = first_cpu(text)
    assert out.count("processor\t:") == 1 and "Model\t\t: Raspberry Pi 4" in out
