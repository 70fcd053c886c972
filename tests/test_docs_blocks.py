"""Every ```python and ```bash / ```sh / ```console block of README.md and docs/*.md runs, as written.

One test per block, with the id `page:Lline` (the line of its opening fence). A block that is not meant
to run (a synopsis, an install command, output) is fenced ```text and is not collected; a fence with no
language at all fails `test_every_fence_names_its_language`, so nothing is skipped silently.

How a page runs — the conventions, which docs/contributing.md states for writers:

- **One session per page, in page order.** The page's shell blocks run in one bash session (variables,
  `cd`, background jobs `&` carry over to the next block) and its Python blocks in one interpreter (names
  carry over; before each block it takes the variables the shell blocks exported so far), both in a
  scratch directory holding links to the checkout's `examples/` and `.venv/`, with the venv's `bin` first
  on PATH. Running one block alone first runs the page's earlier blocks. After the page's last block
  every process its session started is stopped (SIGTERM to the process group, then SIGKILL).
- **A shell block passes when every command in it succeeds** (an `ERR` trap records each failing command,
  pipefail on): a terminal shows the same. Each block is bounded by `BLOCK_TIMEOUT` seconds.
- **Glue only from the prose.** The paragraph just above a block may say "with `rpq serve ARGS` running"
  (several `rpq serve` / `rpq listen` commands may be named in that sentence): the harness starts exactly
  those commands in the page's shell session, waits until their port answers (`--port`, else 8000 for
  serve, 8787 for listen), runs the block and stops them. Nothing else is added.
- **A Python block whose first line is `# NAME.py`** is that file: it is written into the scratch
  directory (and must compile), and a later block runs it (`pytest -q NAME.py`).
- **RunPod itself is an emulator.** Blocks written against RunPod (no `--local`, `Client()` without a
  base URL, `https://api.runpod.ai/...`) run against a stand-in emulator serving the endpoint ids the
  pages use as placeholders (`abc123`, `abc123xyz`: examples/echo.py; `ENDPOINT_ID`:
  examples/fake_llm.py), by the routes docs/testing.md documents: shell sessions get
  `RUNPOD_ENDPOINT_BASE_URL` pointing at one `rpq serve ... --port 0` shared by every page, and the Python
  interpreter runs inside `mock_runpod(...)`, which also sets `RUNPOD_API_KEY` and reroutes
  `https://api.runpod.ai`. Python blocks resolve no host name but loopback ones, so neither a block nor a
  webhook it asks the emulator for leaves the machine.
- The examples use `rpq serve`'s default port, 8000: the pages run one at a time under a lock file, and a
  port 8000 already taken fails with a message that says so.
- A block known to fail until another change lands is listed in `KNOWN_FAILURES` (an xfail, strict
  unless the failure is a race).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "console"}
RUN = {"python", *SHELL}
NOT_RUN = {"text"}
BLOCK_TIMEOUT = 60.0
SERVE_READY_TIMEOUT = 20.0
STOP_GRACE = 10.0
DEFAULT_PORT = 8000  # rpq serve's
LISTEN_PORT = 8787  # rpq listen's
STAND_IN = {"abc123": "echo.py", "abc123xyz": "echo.py", "ENDPOINT_ID": "fake_llm.py"}

# (page, a line of the block) -> (why it fails today, strict). Strict: the suite fails once the block
# passes, so the entry is removed then. The tour's race is not strict: it fails only when `rpq run`
# connects before `rpq serve &` has bound (most runs here, not all), and a strict xfail would flake.
KNOWN_FAILURES: dict[tuple[str, str], tuple[str, bool]] = {}

# bash, made a child subreaper first (prctl PR_SET_CHILD_SUBREAPER = 36, kept across exec): a background
# job's child orphaned by its parent's exit is re-parented to the page's bash, where cleanup finds it.
SUBREAPER = (
    "import ctypes, os; ctypes.CDLL(None).prctl(36, 1, 0, 0, 0); "
    "os.execvp('bash', ['bash', '--norc', '--noprofile'])"
)

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[^\n`]*)\n(?P<code>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
GLUE = re.compile(r"`(rpq (?:serve|listen) [^`]+)`")
# "with `rpq serve X` running", "with `rpq serve X` (a note) and `rpq listen Y` running in two terminals"
GLUE_SENTENCE = re.compile(r"\bwith\s+(`rpq (?:serve|listen) [^`]+`.*?)\brunning\b", re.I)
FILE_HEADER = re.compile(r"#\s*(?P<name>[\w.-]+\.py)\s*$")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the checkout, e.g. docs/client.md
    line: int  # the opening fence's line, 1-based
    lang: str
    code: str
    prose: str  # the paragraph just above the block

    @property
    def id(self) -> str:
        return f"{self.page}:L{self.line}"

    @property
    def glue(self) -> list[str]:
        """The servers the prose says are running during this block, in the order named."""
        commands: list[str] = []
        for sentence in GLUE_SENTENCE.finditer(" ".join(self.prose.split())):
            commands += GLUE.findall(sentence.group(1))
        return commands

    @property
    def file_name(self) -> str | None:
        first = self.code.split("\n", 1)[0]
        match = FILE_HEADER.fullmatch(first.strip()) if self.lang == "python" else None
        return match.group("name") if match else None


def parse(page: Path) -> list[Block]:
    text = page.read_text()
    blocks = []
    previous_end = 0
    for match in FENCE.finditer(text):
        above = text[previous_end : match.start()].strip()
        paragraph = re.split(r"\n\s*\n", above)[-1] if above else ""
        line = text.count("\n", 0, match.start()) + 1
        indent = len(match.group("indent"))
        code = "\n".join(ln[indent:] for ln in match.group("code").split("\n"))
        blocks.append(
            Block(page.relative_to(ROOT).as_posix(), line, match.group("lang").strip(), code, paragraph)
        )
        previous_end = match.end()
    return blocks


def _runnable(page: Path) -> list[Block]:
    return [b for b in parse(page) if b.lang in RUN]


def _params() -> Iterator[object]:
    for page in PAGES:
        for block in _runnable(page):
            marks = [pytest.mark.timeout(BLOCK_TIMEOUT * 8)]
            lines = [ln.strip() for ln in block.code.splitlines()]
            for (known_page, known_line), (reason, strict) in KNOWN_FAILURES.items():
                if block.page == known_page and any(ln.startswith(known_line) for ln in lines):
                    marks.append(pytest.mark.xfail(strict=strict, reason=reason))
            yield pytest.param(block, id=block.id, marks=marks)


def _shell_commands(block: Block) -> str:
    if block.lang != "console":
        return block.code
    # A console block shows a prompt: `$ command` lines run, the others are the output shown.
    return "\n".join(ln[2:] for ln in block.code.splitlines() if ln.startswith("$ "))


def _port_of(command: str) -> int:
    words = shlex.split(command)
    for i, word in enumerate(words):
        if word == "--port" and i + 1 < len(words):
            return int(words[i + 1])
        if word.startswith("--port="):
            return int(word.split("=", 1)[1])
    return LISTEN_PORT if words[1] == "listen" else DEFAULT_PORT


def _port_answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


# The Python session: one interpreter per page, inside mock_runpod (RunPod's stand-in), executing the
# page's blocks in one namespace. It reads a block's path on stdin and writes `<path>.result` (JSON).
DRIVER = r"""
import json, os, runpy, socket, sys, traceback
from pathlib import Path
from runpod_queue.testing import mock_runpod

examples, stand_in = Path(sys.argv[1]), json.loads(sys.argv[2])
handlers = {eid: runpy.run_path(str(examples / f))["handler"] for eid, f in stand_in.items()}
namespace = {"__name__": "__main__"}
commands = sys.stdin
sys.stdin = open(os.devnull)
real_getaddrinfo = socket.getaddrinfo

def loopback_only(host, *args, **kwargs):  # a block (or a webhook it asks for) never leaves the machine
    if host not in (None, "localhost", "::1") and not str(host).startswith("127."):
        raise socket.gaierror(f"doc blocks reach only 127.0.0.1 (RunPod is an emulator): not {host}")
    return real_getaddrinfo(host, *args, **kwargs)

socket.getaddrinfo = loopback_only
with mock_runpod(handlers, clock="real"):
    for line in commands:
        path, name, env_file = json.loads(line)
        if env_file:  # what the page's shell exported so far, as a python started from it would see
            for entry in Path(env_file).read_bytes().split(b"\0"):
                key, sep, value = entry.decode().partition("=")
                if sep and key not in ("RUNPOD_ENDPOINT_BASE_URL", "PWD", "OLDPWD", "SHLVL", "_"):
                    os.environ[key] = value
        result = {"ok": True, "error": ""}
        try:
            exec(compile(Path(path).read_text(), name, "exec"), namespace)
        except BaseException:
            result = {"ok": False, "error": traceback.format_exc()}
        sys.stdout.flush(); sys.stderr.flush()
        # written whole, then renamed: the harness reads the file as soon as it exists
        Path(path + ".result.tmp").write_text(json.dumps(result))
        os.replace(path + ".result.tmp", path + ".result")
"""


@dataclass
class Outcome:
    ok: bool
    report: str


@dataclass
class PageSession:
    """The page's scratch directory, shell session and Python interpreter, run up to some block."""

    blocks: list[Block]
    workdir: Path
    env: dict[str, str]
    done: dict[str, Outcome] = field(default_factory=dict)
    shell: subprocess.Popen[bytes] | None = None
    python: subprocess.Popen[bytes] | None = None
    stand_in_url: Callable[[], str] = str
    counter: int = 0

    def run_through(self, block: Block) -> Outcome:
        for earlier in self.blocks:
            if earlier.id not in self.done:
                self.done[earlier.id] = self._run(earlier)
            if earlier == block:
                break
        return self.done[block.id]

    @property
    def finished(self) -> bool:
        return len(self.done) == len(self.blocks)

    # -- running one block ---------------------------------------------------------------------

    def _run(self, block: Block) -> Outcome:
        self.counter += 1
        step = self.workdir.parent / f"step{self.counter}"
        if block.file_name:
            try:
                compile(block.code, block.id, "exec")
            except SyntaxError as exc:
                return Outcome(False, f"{block.file_name} does not compile: {exc}")
            (self.workdir / block.file_name).write_text(block.code)
            return Outcome(True, "")
        started: list[str] = []
        try:
            for command in block.glue:
                port = _port_of(command)
                if _port_answers(port):
                    return Outcome(False, f"port {port} is taken before `{command}` starts: free it")
                self._shell(f"{command} &\n__rpq_glue+=($!)\n", check=False)
                started.append(command)
                _wait_for(
                    lambda p=port: _port_answers(p), SERVE_READY_TIMEOUT, f"`{command}` (the prose's glue)"
                )
            if block.lang == "python":
                return self._python(step, block)
            return self._shell(_shell_commands(block), check=True)
        finally:
            if started:
                self._shell('kill "${__rpq_glue[@]}"; wait "${__rpq_glue[@]}"; __rpq_glue=()\n', check=False)

    def _shell(self, code: str, *, check: bool) -> Outcome:
        self.counter += 1
        step = self.workdir.parent / f"shell{self.counter}"
        if self.shell is None:
            self._start_shell()
        assert self.shell is not None and self.shell.stdin is not None
        script, log, fails, done = (step.with_suffix(s) for s in (".sh", ".log", ".fails", ".done"))
        script.write_text(code)
        fails.write_text("")
        q = shlex.quote
        command = (
            f"__rpq_fails={q(str(fails))}; source {q(str(script))} </dev/null >{q(str(log))} 2>&1; "
            f"echo $? > {q(str(done))}\n"
        )
        self.shell.stdin.write(command.encode())
        self.shell.stdin.flush()
        try:
            _wait_for(done.exists, BLOCK_TIMEOUT, "the block to finish")
        except AssertionError as exc:
            self.close()
            return Outcome(False, f"{exc}; the page's session is stopped\n{_tail(log)}")
        failed = [ln for ln in fails.read_text().splitlines() if not ln.startswith("source ")]
        if check and failed:
            return Outcome(False, "failing commands:\n  " + "\n  ".join(failed) + "\noutput:\n" + _tail(log))
        return Outcome(True, "")

    def _python(self, step: Path, block: Block) -> Outcome:
        if self.python is None:
            log = open(self.workdir.parent / "python.log", "ab")  # noqa: SIM115 - the child keeps it
            self.python = subprocess.Popen(
                [sys.executable, "-c", DRIVER, str(ROOT / "examples"), json.dumps(STAND_IN)],
                cwd=self.workdir,
                env=self.env,
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        assert self.python.stdin is not None
        path = step.with_suffix(".py")
        path.write_text(block.code)
        result = Path(f"{path}.result")
        env_file = ""
        if self.shell is not None:  # Python blocks see what the shell blocks before them exported
            env_file = str(step.with_suffix(".env"))
            self._shell(f"env -0 > {shlex.quote(env_file)}\n", check=False)
        self.python.stdin.write((json.dumps([str(path), block.id, env_file]) + "\n").encode())
        self.python.stdin.flush()
        try:
            _wait_for(lambda: result.exists() or self.python.poll() is not None, BLOCK_TIMEOUT, "the block")  # type: ignore[union-attr]
        except AssertionError as exc:
            self.close()
            return Outcome(False, f"{exc}; the page's session is stopped")
        if not result.exists():
            return Outcome(False, "the Python session exited:\n" + _tail(self.workdir.parent / "python.log"))
        outcome = json.loads(result.read_text())
        return Outcome(outcome["ok"], outcome["error"])

    def _start_shell(self) -> None:
        env = {**self.env, "RUNPOD_ENDPOINT_BASE_URL": self.stand_in_url()}
        self.shell = subprocess.Popen(
            [sys.executable, "-c", SUBREAPER],
            cwd=self.workdir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert self.shell.stdin is not None
        record = 'echo "$BASH_COMMAND (exit $?)" >> "$__rpq_fails"'
        prelude = f"set -E -o pipefail\ntrap '{record}' ERR\n__rpq_glue=()\n"
        self.shell.stdin.write(prelude.encode())
        self.shell.stdin.flush()

    def close(self) -> None:
        """Stop every process the page started: the shell with its background jobs, the interpreter."""
        for proc in (self.shell, self.python):
            if proc is not None and proc.poll() is None:
                _stop_group(proc)
        self.shell = self.python = None


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop `proc` and every process it started, however they were detached.

    Each descendant gets SIGTERM (what `kill %1` sends), new ones as they appear — `rpq serve
    --runpod-worker` may start a worker while it shuts down — for up to `STOP_GRACE` s; then SIGKILL.
    The page's bash is a child subreaper (`SUBREAPER`), so a worker orphaned by its server's exit is
    re-parented to it and still found here, not to init."""
    signalled: set[int] = set()
    deadline = time.monotonic() + STOP_GRACE
    while (alive := _alive(_descendants(proc.pid))) and time.monotonic() < deadline:
        for pid in set(alive) - signalled:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        signalled |= set(alive)
        time.sleep(0.05)
    for pid in _alive(_descendants(proc.pid)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state) of every process, from /proc."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        table[int(stat.parent.name)] = (int(fields[1]), fields[0])
    return table


def _descendants(root: int) -> set[int]:
    table = _processes()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (parent, _) in table.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> list[int]:
    table = _processes()
    return [pid for pid in pids if pid in table and table[pid][1] not in ("Z", "X")]


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no output)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Pages:
    """The page sessions, and the RunPod stand-in their shell sessions share."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.sessions: dict[str, PageSession] = {}
        self.stand_in: subprocess.Popen[bytes] | None = None
        self.stand_in_base_url = ""
        venv_bin = Path(sys.executable).parent
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "RPQ_"))}
        self.env["PATH"] = f"{venv_bin}{os.pathsep}{self.env.get('PATH', '')}"
        self.env["VIRTUAL_ENV"] = str(venv_bin.parent)
        self.env.pop("PYTHONPATH", None)

    def session(self, block: Block) -> PageSession:
        if block.page not in self.sessions:
            base = Path(tempfile.mkdtemp(prefix=block.page.replace("/", "_") + ".", dir=self.tmp))
            work = base / "work"
            work.mkdir()
            (work / "examples").symlink_to(ROOT / "examples")
            (work / ".venv").symlink_to(Path(sys.executable).parent.parent)
            blocks = _runnable(ROOT / block.page)
            self.sessions[block.page] = PageSession(
                blocks, work, dict(self.env), stand_in_url=self.stand_in_url
            )
        return self.sessions[block.page]

    def stand_in_url(self) -> str:
        """The base URL of an emulator serving the pages' placeholder endpoint ids, started once."""
        if self.stand_in is None:
            ids = [f"{eid}={ROOT / 'examples' / f}" for eid, f in STAND_IN.items()]
            log = self.tmp / "stand-in.log"
            with open(log, "wb") as out:
                self.stand_in = subprocess.Popen(
                    [str(Path(sys.executable).parent / "rpq"), "serve", *ids, "--port", "0"],
                    cwd=self.tmp,
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            url = re.compile(r"http://127\.0\.0\.1:\d+/v2")
            _wait_for(lambda: url.search(log.read_text()), SERVE_READY_TIMEOUT, "the RunPod stand-in")
            self.stand_in_base_url = url.search(log.read_text()).group(0)  # type: ignore[union-attr]
        return self.stand_in_base_url

    def close(self) -> None:
        for session in self.sessions.values():
            session.close()
        if self.stand_in is not None:
            _stop_group(self.stand_in)


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pages]:
    lock = open(Path(tempfile.gettempdir()) / "rpq-docs-blocks.lock", "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)  # another checkout's run on this machine would want port 8000 too
    registry = Pages(tmp_path_factory.mktemp("docs-blocks"))
    try:
        yield registry
    finally:
        registry.close()
        lock.close()


# `make docs-test` runs these (a step of its own in CI); `make test` deselects them by this marker: the
# pages run one at a time (port 8000), ~100 s of one worker, longer than the rest of the suite.
@pytest.mark.docs_blocks
@pytest.mark.parametrize("block", list(_params()))
def test_block_runs_as_written(block: Block, pages: Pages) -> None:
    session = pages.session(block)
    first = not session.done
    if first and _port_answers(DEFAULT_PORT):
        pytest.fail(f"port {DEFAULT_PORT} is taken: the doc blocks use rpq serve's default port; free it")
    outcome = session.run_through(block)
    if session.finished:
        session.close()
    assert outcome.ok, f"{block.id} ({block.lang}) failed:\n{outcome.report}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_fence_names_its_language(page: Path) -> None:
    unnamed = [b.id for b in parse(page) if not b.lang]
    unknown = [f"{b.id} ({b.lang})" for b in parse(page) if b.lang and b.lang not in RUN | NOT_RUN]
    assert not unnamed, f"fence these as ```text (not run) or a language the harness runs: {unnamed}"
    assert not unknown, f"the harness runs {sorted(RUN)} and skips `text`: {unknown}"


def test_prose_glue_is_read_from_the_paragraph_above() -> None:
    block = Block(
        "x.md", 1, "bash", "rpq run echo '{}' --local", "With `rpq serve examples/echo.py` running:"
    )
    assert block.glue == ["rpq serve examples/echo.py"]
    two = "With `rpq serve a.py --port 9000` and `rpq serve b.py` running in other terminals:"
    assert Block("x.md", 1, "bash", "", two).glue == ["rpq serve a.py --port 9000", "rpq serve b.py"]
    assert Block("x.md", 1, "bash", "", "`rpq serve a.py` is the emulator.").glue == []
    assert _port_of("rpq serve a.py --port 9000") == 9000 and _port_of("rpq serve a.py") == DEFAULT_PORT


def _session(tmp_path: Path, *blocks: tuple[str, str]) -> PageSession:
    work = tmp_path / "work"
    work.mkdir()
    parsed = [Block("x.md", i + 1, lang, code, "") for i, (lang, code) in enumerate(blocks)]
    env = Pages(tmp_path).env
    return PageSession(parsed, work, env, stand_in_url=lambda: "http://127.0.0.1:9/v2")


def test_a_command_failing_mid_block_fails_the_block(tmp_path: Path) -> None:
    session = _session(tmp_path, ("bash", "false\necho still here"))
    try:
        outcome = session.run_through(session.blocks[0])
    finally:
        session.close()
    assert not outcome.ok and "false (exit 1)" in outcome.report and "still here" in outcome.report


def test_background_jobs_stop_with_the_page_and_blocks_share_one_session(tmp_path: Path) -> None:
    session = _session(
        tmp_path,
        ("bash", "sleep 300 &\necho $! > sleeper.pid\nexport SHARED=from-the-shell"),
        ("python", "import os\nseen = os.environ['SHARED']"),
        ("python", "assert seen == 'from-the-shell'"),
    )
    try:
        outcomes = [session.run_through(block) for block in session.blocks]
        pid = int((session.workdir / "sleeper.pid").read_text())
        assert _running(pid)  # alive while the page runs
    finally:
        session.close()
    assert [o.ok for o in outcomes] == [True, True, True], [o.report for o in outcomes]
    assert not _running(pid)


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may be slow to reap an orphan)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")
