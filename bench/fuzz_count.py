"""Count the 5xx answers of the route fuzz (tests/emulator/test_fuzz_routes.py) at a large number of cases.

    python bench/fuzz_count.py [--examples 10000] [--before COMMIT] [--seed 26]

The suite runs the fuzz with 50 cases and stops at the first 5xx; this runs its strategies `--examples`
times against `rpq serve` (echo and examples/fake_llm.py, on loopback) without stopping, and prints how
many answers were 5xx, and how many times `GET /_emulator/jobs` answered 5xx right after. With
`--before COMMIT` the same cases (same seed) run first against that commit's emulator (`git archive`;
nothing is checked out), so the two counts sit side by side. `n` and `max_tokens` of OpenAI bodies are
capped at 1,000 here: an older fake_llm holds its loop for hours on the suite's 2^40.
Prints `name: value` lines; nothing here asserts.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "emulator")]

import test_fuzz_routes as fuzz  # noqa: E402

from _harness import emulator_process  # noqa: E402

ECHO = "def handler(job):\n    return job['input']\n"
capped_openai = st.fixed_dictionaries(
    {"messages": st.just([{"role": "user", "content": "hi"}])},
    optional={
        "n": st.one_of(st.integers(min_value=-1, max_value=1000), fuzz.json_values),
        "max_tokens": st.one_of(st.integers(min_value=-1, max_value=1000), fuzz.json_values),
        "stream": st.booleans(),
    },
)
bodies = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.builds(lambda v: {"input": v}, fuzz.json_values),
    fuzz.json_values,
    fuzz.deep_bodies,
    capped_openai,
)


def count(base: str, examples: int, seed_value: int) -> tuple[Counter[str], int]:
    statuses: Counter[str] = Counter()
    listing_5xx = 0
    auth_header = {"authorization": f"Bearer {fuzz.KEY}"}
    root = base.removesuffix("/v2")
    with httpx.Client(base_url=root, timeout=30) as http:

        @seed(seed_value)
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(
            method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
            endpoint=st.one_of(st.sampled_from(["echo", "llm", "llm", "nope"]), fuzz.ids),
            operation=st.one_of(
                st.sampled_from(fuzz.OPERATIONS), st.sampled_from(fuzz.OPENAI), st.text(max_size=12)
            ),
            job_id=st.one_of(st.none(), fuzz.ids),
            query=fuzz.queries,
            auth=st.sampled_from([f"Bearer {fuzz.KEY}", fuzz.KEY, "", "Bearer wrong", None]),
            body=bodies,
        )
        def case(
            method: str,
            endpoint: str,
            operation: str,
            job_id: str | None,
            query: dict[str, str],
            auth: Any,
            body: Any,
        ) -> None:
            nonlocal listing_5xx
            safe = "/" if operation in fuzz.OPENAI else ""
            path = f"/v2/{quote(endpoint, safe='')}/{quote(operation, safe=safe)}"
            if job_id is not None and operation not in fuzz.OPENAI:
                path += f"/{quote(job_id, safe='')}"
            if operation in ("runsync", "status-sync", "stream"):
                query = {**query, "wait": "1000"}
            headers = {"content-type": "application/json"}
            if auth is not None:
                headers["authorization"] = auth
            try:
                response = http.request(
                    method, path, params=query, headers=headers, content=fuzz._encoded(body)
                )
                statuses[f"{response.status_code // 100}xx"] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            listing = http.get("/_emulator/jobs", headers=auth_header)
            if listing.status_code >= 500:
                listing_5xx += 1

        case()
    return statuses, listing_5xx


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--before", metavar="COMMIT")
    parser.add_argument("--seed", type=int, default=26)
    args = parser.parse_args()
    examples = min(args.examples, 200_000)
    os.environ["RPQ_EMULATOR_API_KEY"] = fuzz.KEY  # the served key, kept off the command line
    with tempfile.TemporaryDirectory() as tmp:
        versions: list[tuple[str, Path | None]] = [("after", None)]
        if args.before:
            target = Path(tmp) / "before"
            target.mkdir()
            archive = subprocess.run(
                ["git", "archive", args.before, "src", "examples"], capture_output=True, check=True, cwd=ROOT
            ).stdout
            subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
            versions.insert(0, ("before", target))
        echo = Path(tmp) / "echo.py"
        echo.write_text(ECHO)
        for label, tree in versions:
            fake_llm = (tree or ROOT) / "examples" / "fake_llm.py"
            source = str(tree / "src") if tree else None
            extra = [f"llm={fake_llm}", "--workers", "2", "--no-rate-limits"]
            with emulator_process(f"echo={echo}", *extra, source=source) as (base, _):
                began = time.monotonic()
                statuses, listing_5xx = count(base, examples, args.seed)
            print(f"fuzz_{label}_cases: {examples} in {time.monotonic() - began:.0f} s")
            print(f"fuzz_{label}_answers: {dict(sorted(statuses.items()))}")
            print(f"fuzz_{label}_5xx: {statuses.get('5xx', 0)}")
            print(f"fuzz_{label}_jobs_listing_5xx: {listing_5xx}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
