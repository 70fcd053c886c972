"""The journal on its own: transitions, what a resume reads back, and the endpoint guard."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from runpod_queue.batch import JournalError
from runpod_queue.batch._journal import ItemState, Journal


def test_states_are_the_text_journals_have_always_held(tmp_path: Path) -> None:
    """A journal written by 1.0 (plain strings) resumes: each state's value is that string."""
    assert [s.value for s in ItemState] == ["pending", "submitting", "submitted", "terminal"]
    j = Journal(tmp_path / "j", endpoint_id="ep")
    j.close()
    with sqlite3.connect(tmp_path / "j") as db:  # as 1.0 wrote it
        db.execute("INSERT INTO items (key, line, state, job_id) VALUES ('\"a\"', 1, 'submitted', 'job-a')")
    j = Journal(tmp_path / "j", endpoint_id="ep")
    assert [(r.key, r.state) for r in j.in_state(ItemState.SUBMITTED)] == [('"a"', ItemState.SUBMITTED)]
    j.close()


def test_states_and_what_a_resume_reads(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j", endpoint_id="ep")
    j.add_pending('"a"', 1)
    j.add_pending('"b"', 2)
    j.add_pending('"c"', 3)
    j.submitting('"a"', 1)
    j.submitted('"a"', "job-a", at=100.0)
    j.submitting('"b"', 2)  # killed here: ambiguous
    j.submitting('"c"', 3)
    j.submitted('"c"', "job-c", at=50.0)
    j.retrying('"c"', "failure")
    j.retry_confirmed('"c"')
    j.terminal('"c"', 3, "FAILED", '{"key":"c"}')
    j.close()

    j = Journal(tmp_path / "j", endpoint_id="ep")
    assert j.counts() == {"submitted": 1, "submitting": 1, "terminal": 1}
    a, b, c = j.get('"a"'), j.get('"b"'), j.get('"c"')
    assert a is not None and a.state is ItemState.SUBMITTED and a.job_id == "job-a" and a.attempts == 1
    assert b is not None and b.state == "submitting" and b.job_id is None and b.submits == 1
    assert c is not None and c.attempts == 2 and c.result == '{"key":"c"}'
    assert [r.key for r in j.in_state(ItemState.SUBMITTED)] == ['"a"']
    assert j.unwritten_results() == [('"c"', '{"key":"c"}')]
    j.mark_written(['"c"'])
    assert j.unwritten_results() == [] and j.final_counts() == {"FAILED": 1}
    j.reset_written([])  # the output file lost the line: it is written again
    assert j.unwritten_results() == [('"c"', '{"key":"c"}')]
    assert list(j.results()) == ['{"key":"c"}']
    j.close()


def test_wal_mode_and_the_endpoint_guard(tmp_path: Path) -> None:
    Journal(tmp_path / "j", endpoint_id="ep").close()
    with sqlite3.connect(tmp_path / "j") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    with pytest.raises(JournalError, match="endpoint 'ep', not 'other'"):
        Journal(tmp_path / "j", endpoint_id="other")
    (tmp_path / "junk").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalError, match="not a usable batch journal"):
        Journal(tmp_path / "junk", endpoint_id="ep")


def test_one_run_per_journal(tmp_path: Path) -> None:
    first = Journal(tmp_path / "j", endpoint_id="ep")
    with pytest.raises(JournalError, match="in use by another running batch"):
        Journal(tmp_path / "j", endpoint_id="ep")
    first.close()
    Journal(tmp_path / "j", endpoint_id="ep").close()
