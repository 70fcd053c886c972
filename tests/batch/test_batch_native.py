"""`rpq batch --native` / `BatchRunner(native=True)`: a file through RunPod's Batch Jobs, over loopback HTTP
against the emulator on its virtual clock (handlers instant, nothing waits for time to pass).

The done-when test of issue 25 is the first: 12,000 items as three batches, killed twice (after create
before finalize; mid-results) and resumed, every key's result exactly once, every request run once.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from batch_support import FAST, keys_once, read_output
from typer.testing import CliRunner

from runpod_queue import Client
from runpod_queue.batch import BatchRunner, ItemStatus, JournalError, PollOptions
from runpod_queue.batch import _native as native_module
from runpod_queue.cli._app import app, load_commands
from runpod_queue.emulator import Emulator, EndpointSpec, Readings
from runpod_queue.worker import keep_key
from shared_support import EmuSetup

load_commands()
QUICK = PollOptions(min_interval=0.01, max_interval=0.1)


class Counted:
    """Counts runs per input ``n`` (a second run of one ``n`` is a request sent twice); inputs may ask to
    fail, or to fail their first run only. Records the order jobs started in (``seen``). A non-object
    input is returned as it is."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: Counter[Any] = Counter()
        self.seen: list[Any] = []
        self.release = threading.Event()  # inputs with "hold" wait for it

    def __call__(self, job: dict[str, Any]) -> Any:
        data = job["input"]
        if not isinstance(data, dict):
            return data  # a non-object output: keep_key wraps it
        with self.lock:
            n = data.get("n")
            self.runs[n] += 1
            self.seen.append(n)
            run = self.runs[n]
        if data.get("hold"):
            self.release.wait(10)
        if data.get("fail") or (data.get("fail_first") and run == 1):
            raise RuntimeError(f"asked to fail {n}")
        return {"n": n, "double": 2 * n if isinstance(n, int) else None}


HANDLERS: dict[str, Counted] = {}


def _endpoints() -> dict[str, Any]:
    for name in ("big", "keyed", "plain", "idle", "one", "cli"):
        HANDLERS[name] = Counted()
    return {
        "big": EndpointSpec(keep_key(HANDLERS["big"]), workers=4),
        "keyed": keep_key(HANDLERS["keyed"]),
        "plain": HANDLERS["plain"],  # not wrapped: results carry no key
        "idle": EndpointSpec(keep_key(HANDLERS["idle"]), workers=0),
        "one": EndpointSpec(keep_key(HANDLERS["one"]), workers=1),
        "cli": keep_key(HANDLERS["cli"]),
        "gen": EndpointSpec(keep_key(chunks), return_aggregate_stream=True),
    }


def chunks(job: dict[str, Any]) -> Iterator[Any]:
    """A generator handler: with return_aggregate_stream its output is the list of what it yielded."""
    yield {"part": 1, "n": job["input"]["n"]}
    yield "two"


@pytest.fixture(scope="module")
def emu_setup() -> EmuSetup:
    return EmuSetup(_endpoints, {"clock": "virtual", "rate_limits": False})


@pytest.fixture
def client(emu: Emulator) -> Iterator[Client]:
    with Client(base_url=emu.base_url, retries=FAST, rate_limits=False) as c:
        yield c


class Crash(BaseException):
    """A simulated kill at a checkpoint: nothing after it runs (the journal holds what was committed)."""


def crash_at(monkeypatch: pytest.MonkeyPatch, name: str, nth: int = 1) -> None:
    seen = 0

    def checkpoint(point: str) -> None:
        nonlocal seen
        if point == name:
            seen += 1
            if seen == nth:
                raise Crash(f"killed at {name} #{nth}")

    monkeypatch.setattr(native_module, "checkpoint", checkpoint)


def items_file(path: Path, items: list[Any]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def write(path: Path, items: list[Any]) -> list[str]:
    """The items as a runner takes them (JSON lines), also written to ``path``."""
    return items_file(path, items).read_text().splitlines()


def keyed_items(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"key": f"k{n}", "input": {"n": n, **extra}} for n in range(count)]


def runner(client: Client, tmp_path: Path, endpoint: str, **options: Any) -> BatchRunner:
    options.setdefault("output", tmp_path / "out.jsonl")
    options.setdefault("polling", QUICK)
    return BatchRunner(client.endpoint(endpoint), journal=tmp_path / "j.sqlite", native=True, **options)


def eventually(condition: Any, limit: float = 20.0) -> None:
    """Poll state the runner or the emulator changes (no event to wait on from outside)."""
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


def rpq(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


# -- the done-when test --------------------------------------------------------------------------------


@pytest.mark.timeout(240)  # 12,000 jobs through the emulator three times over: ~20 s alone, more when shared
def test_12000_items_three_batches_killed_twice_every_key_once(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 12_000
    inputs = items_file(tmp_path / "in.jsonl", keyed_items(count))
    out = tmp_path / "out.jsonl"
    args = ["batch", str(inputs), "--native", "-e", "big", "-o", str(out), "--base-url", emu.base_url,
            "--no-rate-limits", "--no-progress"]  # fmt: skip
    with Client(base_url=emu.base_url, rate_limits=False) as c:
        batches = c.endpoint("big").batches

        # Kill 1: the first batch is created and filled, not finalized.
        crash_at(monkeypatch, "added")
        with pytest.raises(Crash):
            rpq(*args)
        (draft,) = batches.list()  # batches are filled one at a time: the first, full, not finalized
        assert (draft.status, draft.total) == ("DRAFT", 5_000)

        # Kill 2: resumed (the DRAFT finalized, not duplicated), then killed in the middle of the results.
        crash_at(monkeypatch, "page", nth=3)
        with pytest.raises(Crash):
            rpq(*args)
        assert batches.get(draft.id).status == "FINALIZED"
        written = len(read_output(out))
        assert 0 < written < count

        # The same command again finishes the work.
        monkeypatch.setattr(native_module, "checkpoint", lambda point: None)
        last = rpq(*args)
        assert last.exit_code == 0, last.output
        assert "done: all 12000 ok" in last.output

        rows = keys_once(out)  # every key exactly once
        assert len(rows) == count
        assert all(r["status"] == "COMPLETED" for r in rows.values())
        assert rows['"k7"']["output"] == {"n": 7, "double": 14}  # the key field stripped again
        # Three batches, no fourth. (A kill while a create is on the wire may leave an empty DRAFT, which
        # the resume names in a warning: it holds no items.)
        final = [b for b in batches.list() if b.total]
        assert sorted(b.total for b in final) == [2_000, 5_000, 5_000]
        assert all(b.is_done for b in final)
        runs = HANDLERS["big"].runs
        assert len(runs) == count and max(runs.values()) == 1  # never two requests for one item
        # The client pages through every result of a batch (500 a page by default, the emulator's max 1000).
        assert len(list(batches.results(final[0].id, page_size=300))) == final[0].total


# -- keys across the gap -------------------------------------------------------------------------------


def test_results_without_a_key_are_unmatched_never_guessed(client: Client, tmp_path: Path) -> None:
    summary = runner(client, tmp_path, "plain").run(write(tmp_path / "in.jsonl", keyed_items(5)))
    assert summary.unmatched == 5 and summary.completed == 0 and not summary.ok
    rows = keys_once(tmp_path / "out.jsonl")
    assert {r["status"] for r in rows.values()} == {ItemStatus.UNMATCHED}
    assert all("keep_key" in r["error"] and "output" not in r for r in rows.values())


def test_the_cli_reports_unmatched_items_and_exits_1(emu: Emulator, tmp_path: Path) -> None:
    inputs = items_file(tmp_path / "in.jsonl", keyed_items(2))
    out = tmp_path / "out.jsonl"
    args = ["batch", str(inputs), "--native", "-e", "plain", "-o", str(out), "--base-url", emu.base_url]
    answer = rpq(*args, "--no-progress")
    assert answer.exit_code == 1, answer.output
    assert (
        re.search(r"2\s+unmatched", answer.output)
        and "2 items did not complete (2 unmatched)" in answer.output
    )
    ran = Counter(HANDLERS["plain"].runs)
    again = rpq(*args, "--no-progress")  # the same command: nothing to redo, nothing resent
    assert again.exit_code == 1 and len(keys_once(out)) == 2 and HANDLERS["plain"].runs == ran


def test_failures_without_output_get_their_status_and_are_retried(client: Client, tmp_path: Path) -> None:
    items = keyed_items(6)
    for item in items[:3]:
        item["input"]["fail_first"] = True
    summary = runner(client, tmp_path, "keyed", retry_failed=1).run(write(tmp_path / "in.jsonl", items))
    assert summary.completed == 6 and summary.retried == 3 and summary.ok, summary
    rows = keys_once(tmp_path / "out.jsonl")
    assert [rows[f'"k{n}"']["attempts"] for n in range(6)] == [2, 2, 2, 1, 1, 1]


def test_failures_beyond_retry_failed_end_failed_with_their_errors(client: Client, tmp_path: Path) -> None:
    items = keyed_items(4)
    items[1]["input"]["fail"] = items[2]["input"]["fail"] = True
    summary = runner(client, tmp_path, "keyed", retry_failed=0).run(write(tmp_path / "in.jsonl", items))
    assert (summary.completed, summary.failed, summary.unmatched) == (2, 2, 0)
    rows = keys_once(tmp_path / "out.jsonl")
    for key in ('"k1"', '"k2"'):
        assert rows[key]["status"] == "FAILED" and "asked to fail" in rows[key]["error"]


def test_a_single_failure_is_tied_exactly(client: Client, tmp_path: Path) -> None:
    items = keyed_items(3)
    items[2]["input"]["fail"] = True
    runner(client, tmp_path, "keyed", retry_failed=0).run(write(tmp_path / "in.jsonl", items))
    row = keys_once(tmp_path / "out.jsonl")['"k2"']
    assert row["status"] == "FAILED" and "asked to fail 2" in row["error"] and row["id"].startswith("req_")


def test_runpods_echoed_input_ties_results_without_keep_key(tmp_path: Path) -> None:
    handler = Counted()
    readings = Readings(batch_result_input="echoed")
    with (
        Emulator({"ep": handler}, clock="virtual", readings=readings, rate_limits=False) as emu,
        Client(base_url=emu.base_url, retries=FAST, rate_limits=False) as client,
    ):
        items = [*keyed_items(3), {"key": 9, "input": ["not", "an", "object"]}]
        summary = runner(client, tmp_path, "ep").run(write(tmp_path / "in.jsonl", items))
    assert summary.completed == 4 and summary.unmatched == 0
    rows = keys_once(tmp_path / "out.jsonl")
    assert rows['"k1"']["output"] == {"n": 1, "double": 2} and rows["9"]["status"] == "COMPLETED"


def test_non_object_inputs_and_outputs_round_trip(client: Client, tmp_path: Path) -> None:
    items = [{"key": 1, "input": [1, 2]}, {"key": 2, "input": "text"}, {"key": 3, "input": None}]
    summary = runner(client, tmp_path, "keyed").run(write(tmp_path / "in.jsonl", items))
    assert summary.completed == 3
    rows = keys_once(tmp_path / "out.jsonl")
    assert [rows[k]["output"] for k in ("1", "2", "3")] == [[1, 2], "text", None]  # as the handler saw them


def test_an_input_over_one_add_call_is_rejected_not_fatal(client: Client, tmp_path: Path) -> None:
    items = [*keyed_items(2), {"key": "huge", "input": {"blob": "x" * (10 * 2**20)}}]
    summary = runner(client, tmp_path, "keyed").run(write(tmp_path / "in.jsonl", items))
    assert (summary.completed, summary.rejected) == (2, 1)
    row = keys_once(tmp_path / "out.jsonl")['"huge"']
    assert row["status"] == "REJECTED" and "object storage" in row["error"]


def test_an_input_naming_a_file_to_upload_is_rejected_not_sent_as_a_marker(
    client: Client, tmp_path: Path
) -> None:
    items = [*keyed_items(1), {"key": "file", "input": {"image": {"$upload": "big.png"}}}]
    summary = runner(client, tmp_path, "keyed").run(write(tmp_path / "in.jsonl", items))
    assert (summary.completed, summary.rejected) == (1, 1)
    row = keys_once(tmp_path / "out.jsonl")['"file"']
    assert row["status"] == "REJECTED" and "rpq upload FILE" in row["error"]


def test_a_generator_handlers_chunks_each_carry_the_key(client: Client, tmp_path: Path) -> None:
    summary = runner(client, tmp_path, "gen").run(write(tmp_path / "in.jsonl", keyed_items(3)))
    assert summary.completed == 3
    rows = keys_once(tmp_path / "out.jsonl")
    assert rows['"k2"']["output"] == [{"part": 1, "n": 2}, "two"]


def test_a_partial_add_before_a_kill_is_completed_not_repeated(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed while adding: RunPod's requestTotal says which members are in; the rest are added once."""
    inputs = write(tmp_path / "in.jsonl", keyed_items(5, hold=False))
    crash_at(monkeypatch, "created")
    with pytest.raises(Crash):
        runner(client, tmp_path, "cli").run(inputs)
    db = sqlite3.connect(tmp_path / "j.sqlite")
    (batch_id,) = db.execute("SELECT batch_id FROM native_batches").fetchone()
    bodies = [json.loads(b) for (b,) in db.execute("SELECT body FROM native_items ORDER BY pos LIMIT 2")]
    db.close()
    batches = client.endpoint("cli").batches
    batches.add(batch_id, bodies)  # the first add call landed; its answer was lost with the process
    monkeypatch.setattr(native_module, "checkpoint", lambda point: None)
    before = Counter(HANDLERS["cli"].runs)
    summary = runner(client, tmp_path, "cli").run(inputs)
    assert summary.completed == 5 and batches.get(batch_id).total == 5
    ran = HANDLERS["cli"].runs - before
    assert sorted(ran) == [0, 1, 2, 3, 4] and set(ran.values()) == {1}


# -- limits, slots, cancel, /run ------------------------------------------------------------------------


def test_more_batches_than_active_slots_wait_for_a_slot(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(native_module, "BATCH_SIZE", 4)
    batches = client.endpoint("keyed").batches
    before = {b.id for b in batches.list()}
    summary = runner(client, tmp_path, "keyed").run(write(tmp_path / "in.jsonl", keyed_items(50)))
    assert summary.completed == 50 and summary.rate_limited == 0  # never asked for an 11th
    ours = [b.total for b in batches.list() if b.id not in before]
    assert sorted(ours) == [2] + [4] * 12  # more than 10 batches: later ones waited for a slot


def test_the_eleventh_active_batch_waits_until_one_ends_and_cancel_drains(
    client: Client, tmp_path: Path
) -> None:
    batches = client.endpoint("idle").batches
    others = [batches.create([]) for _ in range(10)]  # someone else's ten DRAFTs fill the endpoint
    run = runner(client, tmp_path, "idle")
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(run.run(write(tmp_path / "in.jsonl", keyed_items(2)))), daemon=True
    )
    thread.start()
    try:
        eventually(lambda: run.summary.rate_limited >= 1)  # the 11th create: 429, and the runner waits
        assert len(batches.list()) == 10
        batches.cancel(others[0].id)  # a slot frees: ours is created; with no workers it stays queued
        eventually(lambda: batches.list()[0].status == "FINALIZED")
        batches.cancel(batches.list()[0].id)  # cancel drains: queued requests end at once
        thread.join(30)
        assert not thread.is_alive()
    finally:
        for other in others[1:]:
            batches.cancel(other.id)
        thread.join(10)
    (summary,) = result
    assert summary.failed == 2 and not summary.interrupted
    rows = keys_once(tmp_path / "out.jsonl")
    assert {r["status"] for r in rows.values()} == {"CANCELLED"}
    assert HANDLERS["idle"].runs == Counter()


def test_stop_leaves_the_batch_running_and_the_same_run_resumes_it(client: Client, tmp_path: Path) -> None:
    batches = client.endpoint("idle").batches
    before = {b.id for b in batches.list()}
    inputs = write(tmp_path / "in.jsonl", keyed_items(3))
    run = runner(client, tmp_path, "idle")
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(run.run(inputs)), daemon=True)
    thread.start()
    try:
        eventually(lambda: any(b.status == "FINALIZED" for b in batches.list() if b.id not in before))
    finally:
        run.stop()
        thread.join(30)
    (stopped,) = result
    assert stopped.interrupted and stopped.in_flight == 3 and not (tmp_path / "out.jsonl").read_text()
    (ours,) = [b for b in batches.list() if b.id not in before]
    assert ours.status == "FINALIZED" and ours.total == 3  # still on RunPod: a stop cancels nothing
    batches.cancel(ours.id)
    resumed = runner(client, tmp_path, "idle").run(inputs)
    assert resumed.resumed == 3 and resumed.failed == 3 and not resumed.interrupted
    assert len(keys_once(tmp_path / "out.jsonl")) == 3
    assert [b.id for b in batches.list() if b.id not in before] == [ours.id]  # no second batch


def test_a_run_job_submitted_mid_batch_is_not_delayed(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One worker holds the batch's first request; a /run job sent then runs next, before the other 199."""
    handler = HANDLERS["one"]
    job_ids: list[str] = []

    def checkpoint(point: str) -> None:
        if point == "finalized":
            eventually(lambda: handler.seen == [0])
            job_ids.append(client.endpoint("one").run({"n": "run"}).id)
            handler.release.set()

    monkeypatch.setattr(native_module, "checkpoint", checkpoint)
    items = keyed_items(200)
    items[0]["input"]["hold"] = True
    summary = runner(client, tmp_path, "one").run(write(tmp_path / "in.jsonl", items))
    assert summary.completed == 200
    assert client.endpoint("one").wait(job_ids[0], timeout=10).is_completed
    assert handler.seen[:2] == [0, "run"] and len(handler.seen) == 201


def test_a_native_journal_is_not_resumed_over_run_and_back(client: Client, tmp_path: Path) -> None:
    inputs = write(tmp_path / "in.jsonl", keyed_items(2))
    runner(client, tmp_path, "keyed").run(inputs)
    plain = BatchRunner(client.endpoint("keyed"), journal=tmp_path / "j.sqlite", output=tmp_path / "o2")
    with pytest.raises(JournalError, match="--native"):
        plain.run(inputs)
    BatchRunner(client.endpoint("keyed"), journal=tmp_path / "r.sqlite", polling=QUICK).run(inputs)
    with pytest.raises(JournalError, match="without --native"):
        BatchRunner(client.endpoint("keyed"), journal=tmp_path / "r.sqlite", native=True).run(inputs)


def test_native_refuses_options_batch_jobs_do_not_take(emu: Emulator, client: Client, tmp_path: Path) -> None:
    from runpod_queue import Policy
    from runpod_queue.batch import WebhookOptions

    with pytest.raises(ValueError, match="take no policy"):
        runner(client, tmp_path, "keyed", policy=Policy(ttl=60))
    with pytest.raises(ValueError, match="take no webhooks"):
        runner(client, tmp_path, "keyed", webhooks=WebhookOptions(listen=("127.0.0.1", 0)))
    with pytest.raises(ValueError, match="native=True batches do not use it"):
        runner(client, tmp_path, "keyed", warm=2)
    answer = rpq(
        "batch", str(tmp_path / "in.jsonl"), "--native", "-e", "keyed", "-o", str(tmp_path / "o"),
        "--listen", "127.0.0.1:0", "--base-url", emu.base_url,
    )  # fmt: skip
    assert answer.exit_code == 2 and "take no --listen" in answer.output
    answer = rpq(
        "batch", str(tmp_path / "in.jsonl"), "--native", "-e", "keyed", "-o", str(tmp_path / "o"),
        "--warm", "2", "--base-url", emu.base_url,
    )  # fmt: skip
    assert answer.exit_code == 2 and "take no --warm" in answer.output


def test_a_lost_create_answer_is_reported_and_not_duplicated(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after the create reached RunPod, before its id was journaled: the empty DRAFT it left is named,
    and the items go into one new batch."""
    warnings: list[str] = []
    before = Counter(HANDLERS["cli"].runs)
    crash_at(monkeypatch, "created")
    inputs = write(tmp_path / "in.jsonl", keyed_items(3))
    journal = tmp_path / "j.sqlite"
    with pytest.raises(Crash):
        runner(client, tmp_path, "cli").run(inputs)
    db = sqlite3.connect(journal)
    db.execute("UPDATE native_batches SET batch_id = NULL, state = 'creating'")  # the answer never came
    db.commit()
    db.close()
    monkeypatch.setattr(native_module, "checkpoint", lambda point: None)
    summary = runner(client, tmp_path, "cli", on_warning=warnings.append).run(inputs)
    assert summary.completed == 3
    empty = [b for b in client.endpoint("cli").batches.list() if b.total == 0 and b.status == "DRAFT"]
    assert len(empty) == 1 and any(empty[0].id in w for w in warnings)
    ran = HANDLERS["cli"].runs - before
    assert sorted(ran) == [0, 1, 2] and set(ran.values()) == {1}
    client.endpoint("cli").batches.cancel(empty[0].id)
