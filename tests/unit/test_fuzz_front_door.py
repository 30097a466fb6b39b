"""Fuzz the front door (issue 11): generated matrices and argv never crash xrun.

Matrices are YAML trees over the real key names with wrong types, huge and unicode values and
templates; argv covers every subcommand. The property: the exit code is 0, 1, 2 or 3, there is never
a traceback, a 2 names the file it is about, and nothing is written outside the temp project.
Derandomized and bounded (no builds: `--list`), so CI runs the same examples every time.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import traceback
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xarch import cli

TOP_KEYS = ["name", "project", "targets", "images", "profiles", "run", "build", "xfail", "exclude"]
RUN_KEYS = ["args", "env", "stdin", "stdin_file", "timeout", "expect", "limits"]
BUILD_KEYS = ["command", "env", "output", "reproducible", "before", "shell"]
WORDS = ["linux/amd64", "linux/arm/v6", "linux/arm64", "windows/amd64", "js/wasm", "linux", "linux/arm/v9",
         "scratch", "alpine", "distroless-static", "baseline", "host", "pi-zero", "cortex-z99", "Westmere",
         "{{ arch }}", "{{ os }}-{{ arch }}{{ variant_suffix }}{{ ext }}", "{{ ''.__class__ }}", "{% for %}",
         "[bold]x[/]", "os/arch[/variant]", "\x1b[2K\rok", "../../../../tmp/x", "/etc/passwd", "dist/{{ name }}",
         "2g", "0", "-1", "64k", "exit", "stdout", "memory", "pids", "output", "^BEGIN", "(", "é\u202e",
         "x" * 5000]

SETTINGS = settings(derandomize=True, max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(WORDS),
    st.text(max_size=40))


def _keyed(keys: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.one_of(st.sampled_from(keys), st.text(max_size=8)), values, max_size=6)


values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5),
    _keyed(RUN_KEYS + BUILD_KEYS + ["exit", "stdout", "cpu", "target", "image", "profile", "verdict",
                                    "memory", "pids", "output", "name"], inner)), max_leaves=25)

matrices = st.fixed_dictionaries(
    {"name": st.one_of(st.just("app"), scalars), "targets": st.one_of(st.lists(st.sampled_from(WORDS[:7]),
                                                                                min_size=1, max_size=3), values)},
    optional={k: values for k in TOP_KEYS if k not in ("name", "targets")})


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("fuzz")
    for d in ("project", "outside", "home", "cache"):
        (base / d).mkdir()
    (base / "project" / "main.go").write_text("package main\nfunc main() {}\n")
    return base


def _main(argv: list[str], base: Path) -> tuple[int, str]:
    """Run xrun's main in this process (fast enough for hundreds of examples), in the temp project."""
    out, err = io.StringIO(), io.StringIO()
    old = os.getcwd()
    env = {"HOME": str(base / "home"), "XARCH_CACHE_DIR": str(base / "cache"), "COLUMNS": "200"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    os.chdir(base / "project")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(argv)
            except SystemExit as e:            # argparse --help / --version
                rc = int(e.code or 0)
            except BaseException:
                return -1, traceback.format_exc()
    finally:
        os.chdir(old)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, out.getvalue() + err.getvalue()


def _check(rc: int, text: str, must_name: str | None) -> None:
    assert rc in (0, 1, 2, 3), f"exit {rc}:\n{text}"
    assert "Traceback" not in text, text
    if rc == 2 and must_name is not None:
        assert must_name in text, text


@SETTINGS
@given(m=matrices)
def test_generated_matrices_never_crash(sandbox: Path, m: dict[str, Any]) -> None:
    m.setdefault("project", ".")
    path = sandbox / "project" / "matrix.yaml"
    path.write_text(json.dumps(m, ensure_ascii=False))      # JSON is YAML
    before = _tree(sandbox / "project")
    rc, text = _main([str(path), "--list"], sandbox)
    _check(rc, text, "matrix.yaml")
    assert rc != 1, text                      # --list never fails a run
    assert _tree(sandbox / "outside") == set()
    assert _tree(sandbox / "project") == before


@SETTINGS
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_arbitrary_bytes_as_a_matrix(sandbox: Path, text: str) -> None:
    path = sandbox / "project" / "matrix.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    rc, out = _main([str(path), "--list"], sandbox)
    _check(rc, out, "matrix.yaml")


OPTIONS = {
    "run": ["--json", "--junit", "--html", "--engine", "-j", "--only", "--shard", "--list", "--from-goreleaser"],
    "images": ["list", "path", "verify", "prune", "build", "--arch", "--refresh", "--all"],
    "explain": ["--image", "--profile", "--json"],
    "report": ["merge", "--json", "--junit", "--matrix", "--shards"],
    "gha": ["--shards", "--native-arm", "--python", "--uses", "--output", "-o"],
    "exec": ["--image", "--profile", "--timeout", "--install-wrappers"],
}
TOKENS = st.one_of(st.sampled_from(WORDS), st.text(max_size=12), st.sampled_from(
    ["matrix.yaml", "nowhere.yaml", "-1", "0", "1/0", "3/2", "target=*", "bogus", "--help", "local", "docker",
     "nosuch", "armel", "arm/v6", "../outside/x.json"]))


@SETTINGS
@given(data=st.data())
def test_argv_of_every_subcommand(sandbox: Path, data: st.DataObject) -> None:
    sub = data.draw(st.sampled_from(sorted(OPTIONS)))
    words = data.draw(st.lists(st.one_of(st.sampled_from(OPTIONS[sub]), TOKENS), max_size=6))
    if sub == "images" and "build" in words:
        words = [w for w in words if w not in ("alpine", "distroless-static", "scratch")]  # no downloads
    # the user chooses where reports and wrappers go: here, only into the project
    words = [w if not w.startswith(("../", "/")) else "out.txt" for w in words]
    if sub == "run":
        words = [*words, "--list"]
    (sandbox / "project" / "matrix.yaml").write_text("name: app\ntargets: [linux/amd64]\n")
    rc, text = _main([sub, *words], sandbox)
    _check(rc, text, None)
    assert _tree(sandbox / "outside") == set(), words
