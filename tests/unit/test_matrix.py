"""Matrix validation (every error names file:line and the key), defaults, rendering and plan expansion."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from xarch import expand, matrix
from xarch.errors import ConfigError


def load(tmp_path: Path, body: str, name: str = "m.yaml"):
    (tmp_path / "proj").mkdir(exist_ok=True)
    p = tmp_path / name
    p.write_text(textwrap.dedent(body).lstrip("\n"))
    return matrix.load(p, images=["scratch", "alpine", "distroless-static"])


def err(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, body)
    return str(e.value)


def test_defaults(tmp_path):
    plan = load(tmp_path, """
        name: app
        targets: [linux/arm/v6, linux/amd64]
    """)
    assert plan.project == tmp_path
    b = plan.builds[0]
    assert b.argv == ("go", "build", "-trimpath", "-o", "dist/app-linux-arm-v6", ".")
    assert b.output == tmp_path / "dist/app-linux-arm-v6"
    assert b.env["CGO_ENABLED"] == "0" and b.env["GOTOOLCHAIN"] == "local"
    assert (b.env["GOOS"], b.env["GOARCH"], b.env["GOARM"]) == ("linux", "arm", "6")
    assert plan.builds[1].output_rel == "dist/app-linux-amd64"
    assert [c.id for c in plan.cells] == ["linux/arm/v6:scratch:baseline", "linux/amd64:scratch:baseline"]
    assert [c.cpu for c in plan.cells] == ["arm1176", "qemu64"]
    assert plan.run.timeout == 60 and plan.run.expect.exit == 0 and plan.run.args == ()


def test_level_env_of_other_arches_is_blanked_and_target_env_wins(tmp_path):
    plan = load(tmp_path, """
        name: app
        build: {env: {CGO_ENABLED: "1", FOO: "{{ arch }}"}}
        targets:
          - linux/amd64/v3
          - {target: linux/arm64, env: {CGO_ENABLED: "0"}, cc: zig}
    """)
    a, b = plan.builds
    assert a.env["GOAMD64"] == "v3" and a.env["GOARM"] == "" and a.env["CGO_ENABLED"] == "1"
    assert a.env["FOO"] == "amd64"
    assert b.env["CGO_ENABLED"] == "0" and b.env["GOAMD64"] == "" and b.target.cc == "zig"


def test_expansion_profiles_images_exclude_xfail(tmp_path):
    plan = load(tmp_path, """
        name: app
        targets: [linux/amd64, linux/arm/v6, linux/arm64, darwin/arm64]
        images: [scratch, alpine]
        profiles:
          - baseline
          - pi-zero
          - {name: westmere-vm, cpu: {amd64: Westmere}}
        exclude: [{target: linux/arm64, image: alpine}]
        xfail: [{target: "linux/arm*", profile: pi-zero, verdict: unsupported-cpu}]
    """)
    ids = [c.id for c in plan.cells]
    assert ids == [
        "linux/amd64:scratch:baseline", "linux/amd64:scratch:westmere-vm",
        "linux/amd64:alpine:baseline", "linux/amd64:alpine:westmere-vm",
        "linux/arm/v6:scratch:baseline", "linux/arm/v6:scratch:pi-zero",
        "linux/arm/v6:alpine:baseline", "linux/arm/v6:alpine:pi-zero",
        "linux/arm64:scratch:baseline",
        "darwin/arm64:none:none",
    ]
    xf = {c.id: c.xfail for c in plan.cells if c.xfail}
    assert xf == {"linux/arm/v6:scratch:pi-zero": "unsupported-cpu", "linux/arm/v6:alpine:pi-zero": "unsupported-cpu"}
    assert next(c for c in plan.cells if c.profile.name == "westmere-vm").cpu == "Westmere"
    # darwin has no image axis and is built only
    assert plan.builds[3].output_rel == "dist/app-darwin-arm64"


def test_windows_ext_and_templates_in_args(tmp_path):
    plan = load(tmp_path, """
        name: app
        package: ./cmd/app
        targets: [windows/amd64, linux/arm64]
        run: {args: ["--name", "{{ target }}", "{{ output }}"], env: {T: "{{ os }}-{{ arch }}", N: 3}}
    """)
    assert plan.builds[0].output_rel == "dist/app-windows-amd64.exe"
    assert plan.builds[0].argv[-1] == "./cmd/app"
    c = next(c for c in plan.cells if c.target.spec == "linux/arm64")
    assert c.args == ("--name", "linux/arm64", "dist/app-linux-arm64")
    assert c.env == {"T": "linux-arm64", "N": "3"}


def test_string_command_is_split_not_shelled(tmp_path):
    plan = load(tmp_path, """
        name: app
        build: {command: "go build -ldflags '-s -w' -o {{ output }} ."}
        targets: [linux/amd64]
    """)
    assert plan.builds[0].argv == ("go", "build", "-ldflags", "-s -w", "-o", "dist/app-linux-amd64", ".")
    assert plan.builds[0].shell is False


def test_only_and_shard(tmp_path):
    plan = load(tmp_path, """
        name: app
        targets: [linux/amd64, linux/arm/v6, linux/arm64]
        profiles: [baseline, pi-zero]
    """)
    only = expand.select(plan, [("profile", "pi-zero")])
    assert [c.id for c in only.cells] == ["linux/arm/v6:scratch:pi-zero"]
    assert [b.target.spec for b in only.builds] == ["linux/arm/v6"]
    shards = [expand.select(plan, shard=(i, 3)) for i in (1, 2, 3)]
    union = sorted(c.id for s in shards for c in s.cells)
    assert union == sorted(c.id for c in plan.cells)
    assert all(s.cells for s in shards)


@pytest.mark.parametrize(("body", "expected"), [
    ("name: app\n", "m.yaml:1: targets: is required"),
    ("targets: [linux/amd64]\n", "m.yaml:1: name: is required"),
    ("name: app\ntargets: [linux/amd64]\ntargetz: 1\n",
     "m.yaml:3: targetz: unknown key (did you mean 'targets'?)"),
    ("name: app\ntargets:\n  - linux/amd64\n  - linux/arm/v9\n",
     "m.yaml:4: targets[1]: unknown variant 'v9' for arm; known: v5, v6, v7"),
    ("name: app\ntargets: [linux/amd65]\n", "m.yaml:2: targets[0]: unknown arch 'amd65' (did you mean 'amd64'?)"),
    ("name: app\ntargets: [linus/amd64]\n", "m.yaml:2: targets[0]: unknown os 'linus' (did you mean 'linux'?)"),
    ("name: app\ntargets: [linux]\n", "m.yaml:2: targets[0]: 'linux' is not os/arch[/variant]"),
    ("name: app\ntargets: [linux/amd64, linux/amd64]\n", "m.yaml:2: targets[1]: 'linux/amd64' is listed twice"),
    ("name: app\ntargets:\n  - {target: linux/amd64, cc: gcc}\n",
     "m.yaml:3: targets[0].cc: unknown C cross compiler 'gcc'; supported: zig"),
    ("name: app\ntargets:\n  - {env: {A: b}}\n", "m.yaml:3: targets[0]: needs 'target: os/arch[/variant]'"),
    ("name: app\ntargets: [linux/amd64]\nimages: [alpin]\n",
     "m.yaml:3: images[0]: unknown image 'alpin' (did you mean 'alpine'?)"),
    ("name: app\ntargets: [linux/amd64]\nprofiles: [pi-zeroo]\n",
     "m.yaml:3: profiles[0]: unknown profile 'pi-zeroo' (did you mean 'pi-zero'?)"),
    ("name: app\ntargets: [linux/amd64]\nprofiles:\n  - {name: baseline, cpu: {amd64: qemu64}}\n",
     "m.yaml:4: profiles[0].name: 'baseline' is a builtin profile"),
    ("name: app\ntargets: [linux/amd64]\nprofiles:\n  - {name: x, cpu: {amd46: qemu64}}\n",
     "m.yaml:4: profiles[0].cpu.amd46: unknown key (did you mean 'amd64'?)"),
    ("name: app\ntargets: [linux/amd64]\nrun:\n  timeout: -1\n",
     "m.yaml:4: run.timeout: must be a positive number of seconds"),
    ("name: app\ntargets: [linux/amd64]\nrun:\n  expect: {exit: 300}\n",
     "m.yaml:4: run.expect.exit: must be an exit status 0..255"),
    ("name: app\ntargets: [linux/amd64]\nrun:\n  expect:\n    stdout: '(unclosed'\n",
     "m.yaml:5: run.expect.stdout: invalid regular expression '(unclosed'"),
    ("name: app\ntargets: [linux/amd64]\nrun:\n  env: {FLAG: true}\n",
     "m.yaml:4: run.env.FLAG: must be a string (quote it), got a boolean (true)"),
    ("name: app\ntargets: [linux/amd64]\nbuild:\n  shell: maybe\n",
     "m.yaml:4: build.shell: must be true or false"),
    ("name: app\ntargets: [linux/amd64]\nbuild:\n  command: []\n", "m.yaml:4: build.command: must not be empty"),
    ("name: app\ntargets: [linux/amd64]\nbuild:\n  output: 'dist/{{ nme }}'\n",
     "m.yaml:4: build.output: template 'dist/{{ nme }}': 'nme' is undefined"),
    ("name: app\ntargets: [linux/amd64]\nbuild:\n  output: '{{ name.__class__ }}'\n",
     "m.yaml:4: build.output: template"),
    ("name: app\ntargets: [linux/amd64]\nexclude:\n  - {target: linux/arm64}\n",
     "m.yaml:4: exclude[0]: {'target': 'linux/arm64'} matches no cell"),
    ("name: app\ntargets: [linux/amd64]\nxfail:\n  - {target: linux/amd64}\n",
     "m.yaml:4: xfail[0]: needs the verdict"),
    ("name: app\ntargets: [linux/amd64]\nxfail:\n  - {target: linux/amd64, verdict: sigill}\n",
     "m.yaml:4: xfail[0].verdict: unknown verdict 'sigill'"),
    ("name: app\ntargets: [linux/amd64]\nproject: nowhere\n", "m.yaml:3: project: 'nowhere' is not a directory"),
    ("name: app\nname: again\ntargets: [linux/amd64]\n", "m.yaml:2: invalid YAML"),
    ("name: [app\n", "m.yaml:2: invalid YAML"),
    ("name: 'a b'\ntargets: [linux/amd64]\n", "m.yaml:1: name: 'a b' must be letters"),
    ("name: app\ntargets: [js/amd64]\n", "m.yaml:2: targets[0]: 'js/amd64' is not a Go platform"),
    ("", "m.yaml: the file is empty"),
])
def test_errors_name_file_line_and_key(tmp_path, body, expected):
    assert expected in err(tmp_path, body)


def test_two_targets_writing_one_file_is_an_error_naming_both(tmp_path):
    # seed bug 6: a loop writing every target to the same path
    msg = err(tmp_path, """
        name: app
        build: {output: "dist/app{{ ext }}"}
        targets:
          - linux/amd64
          - linux/arm64
    """)
    assert msg.startswith(f"{tmp_path}/m.yaml:2: build.output: ")
    assert "'linux/amd64' (line 4)" in msg and "'linux/arm64' (line 5)" in msg
    assert "'dist/app{{ ext }}'" in msg and "{{ os }}-{{ arch }}" in msg


def test_template_sandbox_blocks_attribute_escapes(tmp_path):
    msg = err(tmp_path, """
        name: app
        build: {output: "{{ ''.__class__.__mro__[1].__subclasses__() }}"}
        targets: [linux/amd64]
    """)
    assert "build.output: template" in msg and "unsafe" in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError) as e:
        matrix.load(tmp_path / "nope.yaml")
    assert str(e.value) == f"{tmp_path}/nope.yaml: no such file"


def test_the_readme_matrix_example_is_valid(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme[readme.index("## The matrix"):].split("```yaml\n", 1)[1].split("```", 1)[0]
    proj = Path(__file__).resolve().parents[2] / "examples" / "greet"
    plan = load(tmp_path, block.replace("project: examples/greet", f"project: {proj}"))
    assert [c.id for c in plan.cells if c.xfail] == ["linux/amd64/v3:scratch:westmere-vm"]


# -- run.stdin_file (issue 18) ---------------------------------------------------------------------

def test_stdin_file_is_read_as_bytes_relative_to_the_matrix(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "data.bin").write_bytes(b"a\0\xffb\n")
    plan = load(tmp_path, """
        name: app
        project: proj
        targets: [linux/amd64]
        run: {stdin_file: in/data.bin}
    """)
    assert plan.run.stdin == b"a\0\xffb\n" and plan.notes == ()


@pytest.mark.parametrize(("setup", "value", "expected"), [
    (None, "nope.bin", "m.yaml:5: run.stdin_file: no such file: {tmp}/nope.bin (the file whose bytes"),
    (None, "proj", "m.yaml:5: run.stdin_file: a directory: {tmp}/proj"),
    (None, "../outside.bin", "m.yaml:5: run.stdin_file: '../outside.bin' reads outside the project: "
                             "{tmp_parent}/outside.bin; stdin files must stay under {tmp} or {tmp}/proj"),
    ("link", "link.bin", "m.yaml:5: run.stdin_file: 'link.bin' reads outside the project: {tmp_parent}/outside.bin "
                         "(a symlink on the way: {tmp}/link.bin resolves to"),
    (None, "''", "m.yaml:5: run.stdin_file: must not be empty"),
    (None, "[a]", "m.yaml:5: run.stdin_file: must be a string, got a list"),
])
def test_stdin_file_errors_name_file_line_and_key(tmp_path, setup, value, expected):
    base = tmp_path / "m"
    base.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"secret")
    if setup == "link":
        (base / "link.bin").symlink_to(tmp_path / "outside.bin")
    msg = err(base, f"name: app\nproject: proj\ntargets: [linux/amd64]\nrun:\n  stdin_file: {value}\n")
    assert expected.format(tmp=base, tmp_parent=tmp_path) in msg, msg


def test_stdin_and_stdin_file_together_is_an_error(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"x")
    msg = err(tmp_path, "name: app\nproject: proj\ntargets: [linux/amd64]\nrun:\n  stdin: x\n  stdin_file: data.bin\n")
    assert "m.yaml:6: run.stdin_file: give stdin (inline text) or stdin_file (a file's bytes), not both" in msg


def test_inline_stdin_naming_an_existing_file_gets_a_hint_in_the_plan_notes(tmp_path):
    (tmp_path / "fixture.txt").write_text("the real input\n")
    plan = load(tmp_path, "name: app\nproject: proj\ntargets: [linux/amd64]\nrun:\n  stdin: fixture.txt\n")
    assert plan.run.stdin == "fixture.txt"      # still the text: the hint warns, it does not guess
    (note,) = plan.notes
    assert note.startswith(f"warning: run.stdin ({tmp_path}/m.yaml:5) is the text 'fixture.txt', which names "
                           f"the file {tmp_path}/fixture.txt"), note
    assert "`stdin_file: fixture.txt`" in note
    # text that is not one line naming a file gets no hint
    for text in ("'fixture.txt\\nmore'", "other.txt", "''", "'\\0'"):
        plan = load(tmp_path, f'name: app\nproject: proj\ntargets: [linux/amd64]\nrun:\n  stdin: "{text.strip(chr(39))}"\n')
        assert plan.notes == (), text
