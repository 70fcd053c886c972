"""Snapshots: `POST /_emulator/snapshot` writes a consistent copy of the state; `Emulator(restore=…)` and
`rpq serve --state FILE --restore SNAPSHOT` start from one; a newer or broken snapshot is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from emulator_support import KEY
from typer.testing import CliRunner

from runpod_queue.cli._app import app, load_commands
from runpod_queue.emulator import Emulator
from runpod_queue.errors import ConfigurationError

HEADERS = {"Authorization": f"Bearer {KEY}"}


def _echo(job: dict[str, Any]) -> Any:
    return {"echo": job["input"]}


def _fill(emu: Emulator) -> dict[str, dict[str, Any]]:
    """Three finished jobs and one queued on an endpoint with no worker; returns each id's /status."""
    with httpx.Client(base_url=emu.base_url, headers=HEADERS) as client:
        ids = [client.post("/echo/run", json={"input": {"n": n}}).json()["id"] for n in range(3)]
        ids.append(client.post("/idle/run", json={"input": {"n": 9}}).json()["id"])
        emu.advance(1)
        return {
            i: client.get(f"/{'idle' if n == 3 else 'echo'}/status/{i}").json() for n, i in enumerate(ids)
        }


def _statuses(emu: Emulator, before: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    with httpx.Client(base_url=emu.base_url, headers=HEADERS) as client:
        return {
            i: client.get(f"/{'idle' if a['status'] == 'IN_QUEUE' else 'echo'}/status/{i}").json()
            for i, a in before.items()
        }


def _emulator(**options: Any) -> Emulator:
    return Emulator({"echo": _echo, "idle": None}, api_key=KEY, clock="virtual", **options)


@pytest.mark.parametrize("with_state", [True, False], ids=["state-file", "in-memory"])
def test_a_snapshot_over_http_restores_every_job_as_it_answered(tmp_path: Path, with_state: bool) -> None:
    snapshot = tmp_path / "fixture.db"
    options = {"state": tmp_path / "a.db"} if with_state else {}
    with _emulator(**options) as emu:
        before = _fill(emu)
        answer = httpx.post(
            f"{emu.root_url}/_emulator/snapshot", json={"path": str(snapshot)}, headers=HEADERS
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["jobs"] == 4
    assert not Path(f"{snapshot}-wal").exists()  # one self-contained file to share
    with _emulator(state=tmp_path / "b.db", restore=snapshot) as emu:
        after = _statuses(emu, before)
    assert after == before
    assert sorted(before[i]["status"] for i in before) == ["COMPLETED"] * 3 + ["IN_QUEUE"]


def test_restore_without_state_starts_from_the_snapshot_in_a_temporary_file(tmp_path: Path) -> None:
    snapshot = tmp_path / "fixture.db"
    with _emulator() as emu:
        before = _fill(emu)
        assert emu.snapshot(snapshot) == 4
    copy = snapshot.read_bytes()
    with _emulator(restore=snapshot) as emu:
        assert _statuses(emu, before) == before
        with httpx.Client(base_url=emu.base_url, headers=HEADERS) as client:
            client.post("/echo/run", json={"input": {}})  # a change goes to the copy, not the snapshot
    assert snapshot.read_bytes() == copy


def test_restore_replaces_what_the_state_file_held(tmp_path: Path) -> None:
    snapshot, state = tmp_path / "fixture.db", tmp_path / "s.db"
    with _emulator() as emu:
        emu.snapshot(snapshot)  # empty
    with _emulator(state=state) as emu:
        _fill(emu)
    with _emulator(state=state, restore=snapshot) as emu:
        assert emu.jobs("echo") == []


def test_an_existing_snapshot_file_is_kept_unless_overwrite_is_asked(tmp_path: Path) -> None:
    snapshot = tmp_path / "fixture.db"
    snapshot.write_text("keep me")
    with _emulator() as emu:
        url = f"{emu.root_url}/_emulator/snapshot"
        refused = httpx.post(url, json={"path": str(snapshot)}, headers=HEADERS)
        assert refused.status_code == 409 and "overwrite" in refused.json()["error"]
        assert snapshot.read_text() == "keep me"
        assert (
            httpx.post(url, json={"path": str(snapshot), "overwrite": True}, headers=HEADERS).status_code
            == 201
        )
        assert httpx.post(url, json={"path": str(snapshot)}).status_code == 401  # the API's key
        assert httpx.post(url, json={"file": "x"}, headers=HEADERS).status_code == 400


def _snapshot(tmp_path: Path) -> Path:
    snapshot = tmp_path / "fixture.db"
    with _emulator() as emu:
        _fill(emu)
        emu.snapshot(snapshot)
    return snapshot


def test_a_snapshot_of_a_newer_format_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    snapshot = _snapshot(tmp_path)
    with sqlite3.connect(snapshot) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    db.close()
    copy = snapshot.read_bytes()
    with pytest.raises(
        ConfigurationError, match=r"fixture\.db: meta\.format: written by a newer runpod-queue"
    ):
        _emulator(state=tmp_path / "s.db", restore=snapshot)
    assert snapshot.read_bytes() == copy
    assert not (tmp_path / "s.db").exists()  # nothing started, nothing written
    load_commands()
    state = tmp_path / "s.db"
    refused = CliRunner().invoke(app, ["serve", "echo", "--state", str(state), "--restore", str(snapshot)])
    assert refused.exit_code == 2
    (line,) = [x for x in refused.output.splitlines() if x.startswith("error:")]
    assert "meta.format: written by a newer runpod-queue" in line


def test_a_broken_row_is_one_line_naming_file_row_and_field(tmp_path: Path) -> None:
    snapshot = _snapshot(tmp_path)
    with sqlite3.connect(snapshot) as db:
        (job_id,) = db.execute("SELECT id FROM jobs ORDER BY seq LIMIT 1").fetchone()
        db.execute("UPDATE jobs SET row = ? WHERE id = ?", (b'{"status": "DONE"}', job_id))
    db.close()
    with pytest.raises(ConfigurationError, match=rf"fixture\.db: jobs row '{job_id}': attempt: missing"):
        _emulator(restore=snapshot)


def test_a_file_that_is_no_snapshot_is_refused(tmp_path: Path) -> None:
    not_one = tmp_path / "notes.db"
    not_one.write_text("hello")
    with pytest.raises(ConfigurationError, match=r"notes\.db: not a runpod-queue snapshot"):
        _emulator(restore=not_one)


def test_a_broken_row_in_a_state_file_is_logged_in_one_line_and_the_other_jobs_still_answer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "s.db"
    with _emulator(state=state) as emu:
        before = _fill(emu)
    broken_id = next(iter(before))
    with sqlite3.connect(state) as db:
        db.execute("UPDATE jobs SET row = ? WHERE id = ?", (b'{"status": "COMPLETED", "body": 7}', broken_id))
    db.close()
    with caplog.at_level("ERROR", logger="runpod_queue.emulator"), _emulator(state=state) as emu:
        after = _statuses(emu, {i: a for i, a in before.items() if i != broken_id})
        with httpx.Client(base_url=emu.base_url, headers=HEADERS) as client:
            assert client.get(f"/echo/status/{broken_id}").status_code == 404
    assert after == {i: a for i, a in before.items() if i != broken_id}
    (line,) = [r.getMessage() for r in caplog.records if broken_id in r.getMessage()]
    assert f"s.db: jobs row '{broken_id}': attempt: missing" in line and "\n" not in line
    with sqlite3.connect(state) as db:  # kept as it was, never rewritten
        assert db.execute("SELECT row FROM jobs WHERE id = ?", (broken_id,)).fetchone()[0] == (
            b'{"status": "COMPLETED", "body": 7}'
        )
    db.close()
