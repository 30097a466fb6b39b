"""The docker pool's exec start: runc's init dying before the cell's command ran ("read init-p") makes
the slot gone (the run loop retries once in a fresh container); any other refusal stays an error.
A kill exec that cannot start (a fork bomb holds the pids limit) kills the container whole instead."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from docker.errors import APIError

from xarch.engines.docker.common import Retries
from xarch.engines.docker.pool import Pool, Slot, SlotGone
from xarch.plan import Expect, Limits, RunSpec


class _Api:
    def __init__(self, error: str) -> None:
        self.error = error

    def exec_create(self, *a: Any, **k: Any) -> dict[str, str]:
        return {"Id": "e1"}

    def exec_start(self, *a: Any, **k: Any) -> Any:
        raise APIError("500 Server Error", explanation=self.error)


def _exec(tmp_path: Path, error: str) -> None:
    host = SimpleNamespace(client=SimpleNamespace(api=_Api(error)), scratch=tmp_path, closing=lambda: False)
    slot = Slot(("t", "", False, Limits()), SimpleNamespace(id="c1"), tmp_path, ())
    Pool(host)._exec(slot, ["/app"], {}, RunSpec((), {}, None, 10, Expect()), Retries())  # type: ignore[arg-type]


def test_runc_init_dying_is_a_slot_gone(tmp_path: Path) -> None:
    with pytest.raises(SlotGone):
        _exec(tmp_path, "OCI runtime exec failed: exec failed: unable to start container process: "
                        "read init-p: connection reset by peer: unknown")


def test_another_refusal_is_not_retried(tmp_path: Path) -> None:
    with pytest.raises(APIError):
        _exec(tmp_path, 'OCI runtime exec failed: exec failed: unable to start container process: exec: '
                        '"/app": stat /app: no such file or directory: unknown')


class _Container:
    def __init__(self) -> None:
        self.id = "c1"
        self.killed = 0

    def kill(self) -> None:
        self.killed += 1


def test_a_kill_exec_refused_by_a_full_pids_cgroup_kills_the_container(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # what the cgroups said just before the kill is kept: the container's init is gone afterwards
    from xarch.engines.docker import pool

    monkeypatch.setattr(pool, "cgroup_counters", lambda pid: (0, 7) if pid == 4242 else None)
    c = _Container()
    host = SimpleNamespace(client=SimpleNamespace(api=_Api("OCI runtime exec failed: exec failed: unable to start "
                                                           "container process: read init-p: connection reset by "
                                                           "peer: unknown")), scratch=tmp_path, closing=lambda: False)
    slot = Slot(("t", "", False, Limits()), c, tmp_path, (), init_pid=4242)
    Pool(host)._kill_all(slot, Retries())  # type: ignore[arg-type]
    assert c.killed == 1
    assert slot.last_counters == (0, 7)
