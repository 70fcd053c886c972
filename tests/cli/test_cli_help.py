"""`rpq … --help` of every registered command: no type noise, upper-case argument names, help text that
reaches the screen as written."""

from __future__ import annotations

import inspect
import re

import pytest
import typer
from cli_support import Invoke
from rich.markup import render

from runpod_queue.cli._app import app, load_commands

load_commands()
_GROUP = typer.main.get_command(app)
assert isinstance(_GROUP, typer.core.TyperGroup)
COMMANDS = sorted(_GROUP.commands)

# typer's type labels: <bool>, <str>, <path>, <int range>, <float range>, <list[str]>, <real|virtual|auto>
NOISE = re.compile(r"<[a-z][^<>\n]*>")


def _help(rpq: Invoke, *command: str) -> str:
    result = rpq(*command, "--help", connect=False)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_every_command_is_checked() -> None:
    assert {"run", "status", "listen", "webhook-url", "serve", "batch", "demo", "worker-env"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)], ids=lambda c: " ".join(c) or "rpq")
def test_help_shows_no_type_labels(rpq: Invoke, command: list[str]) -> None:
    text = _help(rpq, *command)
    assert NOISE.findall(text) == []


@pytest.mark.parametrize("name", COMMANDS)
def test_argument_names_in_the_usage_line_are_upper_case(rpq: Invoke, name: str) -> None:
    usage = next(line for line in _help(rpq, name).splitlines() if "Usage:" in line)
    pieces = usage.split(f"rpq {name}", 1)[1].split()
    assert pieces[0] == "[OPTIONS]"
    for piece in pieces[1:]:
        bare = piece.strip("{}[].")
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", bare), f"{name}: {piece} in {usage.strip()!r}"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_that_takes_a_value_names_it(name: str) -> None:
    """A value option without a metavar would look like a flag now that the type column is gone."""
    for param in _GROUP.commands[name].params:
        if isinstance(param, typer.core.TyperOption) and not (param.is_flag or param.count):
            assert param.metavar, f"rpq {name} {param.opts[0]} needs metavar= (e.g. FILE, URL, N)"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_text_is_not_eaten_by_rich_markup(name: str) -> None:
    """Help is rendered as rich markup: "[default: x]" in a help string would silently vanish."""
    command = _GROUP.commands[name]
    texts = [command.help or "", command.epilog or ""]
    texts += [getattr(param, "help", None) or "" for param in command.params]
    for text in (t.replace("\b", "") for t in texts):  # click's no-rewrap marker is not markup
        assert render(text).plain == text, f"rpq {name}: rich markup changes {text!r}"


@pytest.mark.parametrize("name", COMMANDS)
def test_each_summary_is_one_line(name: str) -> None:
    """The command list keeps a summary's line breaks as they are in the docstring."""
    summary = (_GROUP.commands[name].help or "").strip().split("\n\n")[0]
    assert summary and "\n" not in summary, f"rpq {name}: first paragraph {summary!r}"


@pytest.mark.parametrize("name", ["", *COMMANDS])
def test_later_paragraphs_fit_an_80_column_terminal(name: str) -> None:
    """Paragraphs after the first keep their line breaks: a longer line would wrap raggedly."""
    command = _GROUP.commands[name] if name else _GROUP
    for paragraph in inspect.cleandoc(command.help or "").split("\n\n")[1:]:
        lines = paragraph.split("\n")
        assert len(lines) == 1 or max(map(len, lines)) <= 78, f"rpq {name}: {paragraph!r}"


def test_typer_still_renders_the_type_column_through_the_replaced_method() -> None:
    """If this fails, typer changed how it renders --help: re-check runpod_queue.cli._help (and the pin)."""
    from runpod_queue.cli._help import show_only_metavars

    assert show_only_metavars() is True
