"""`rpq simulate`: the table side by side, --json, the plot, and one-line errors for bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from runpod_queue.cli._app import app, load_commands

load_commands()


def _rpq(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_two_configs_side_by_side_and_the_plot(tmp_path: Path) -> None:
    plot = tmp_path / "out.svg"
    result = _rpq(
        "simulate", "--rate", "1/s", "--duration", "2s", "--cold-start", "5s", "--hours", "0.1",
        "--config", "min=0,max=4,idle=5s", "--config", "min=1,max=4,idle=60s", "--price", "0.0003",
        "--plot", str(plot),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "min=0,max=4,idle=5s" in line)
    assert "min=1,max=4,idle=60s" in header  # one table, a column per configuration
    for row in ("queue delay p95", "end-to-end p99", "cold starts", "workers peak / mean", "cost"):
        assert row in result.output
    assert f"plot: {plot}" in result.output
    assert plot.read_text().lstrip().startswith("<?xml")


def test_json_report(tmp_path: Path) -> None:
    result = _rpq(
        "simulate", "--rate", "2/s", "--hours", "0.05", "--config", "max=3", "--json", "--no-plot",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    (config,) = data["configs"]
    assert config["jobs"] == config["completed"] > 0
    assert set(config["queue_delay"]) == {"mean", "p50", "p95", "p99", "max", "count"}
    assert config["cost"] is None and data["plot"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "2/s", "--config", "min=0,max"], "config 'min=0,max': 'max' is not key=value"),
        (["--rate", "2/s", "--config", "min=0,speed=9"], "unknown key 'speed'"),
        (["--rate", "-2/s"], "rate must be at least 0"),
        (["--rate", "2/s", "--duration", "lognormal:median=4s"], "takes median, p95"),
        ([], "give exactly one of --rate, --profile or --trace"),
        (["--rate", "2/s", "--trace", "x.jsonl"], "got --rate and --trace"),
        (["--trace", "missing.jsonl"], "does not exist"),
        (["--rate", "2/s", "--plot", "out.pdf"], "write .svg or .png"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = _rpq("simulate", "--hours", "0.01", *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


def test_plot_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = _rpq("simulate", "--rate", "1/s", "--hours", "0.01", "--plot", str(tmp_path / "p.png"))
    assert result.exit_code == 2
    assert "pip install 'runpod-queue[plot]'" in result.output
    # Without --plot the default plot is skipped with a note; the table still prints.
    monkeypatch.chdir(tmp_path)
    result = _rpq("simulate", "--rate", "1/s", "--hours", "0.01")
    assert result.exit_code == 0
    assert "note: no plot written" in result.output and "queue delay p50" in result.output
    assert not (tmp_path / "simulate.svg").exists()
