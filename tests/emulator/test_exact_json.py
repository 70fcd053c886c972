"""Every JSON number reaches the handler, and comes back, exactly as sent — as with the official worker's
`json` — even where the fast parser's 64 bits cannot hold it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from runpod_queue.emulator import Emulator

BIG = 18446744073709551616  # 2**64
SMALL = -9223372036854775809  # one below the smallest 64-bit integer


def kinds(job: dict[str, Any]) -> Any:
    data = job["input"]
    return {"echo": data, "kinds": {k: type(v).__name__ for k, v in data.items()}}


def test_integers_past_64_bits_reach_the_handler_and_come_back_exactly() -> None:
    body = b'{"input": {"big": 18446744073709551616, "small": -9223372036854775809, "f": 0.1, "id": "x"}}'
    with Emulator({"ep": kinds}) as emu, httpx.Client(timeout=10) as http:
        answer = http.post(
            f"{emu.base_url}/ep/runsync", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 200, answer.text
        assert b'"big":18446744073709551616' in answer.content
        output = answer.json()["output"]
        assert output["kinds"] == {"big": "int", "small": "int", "f": "float", "id": "str"}
        assert output["echo"]["big"] == BIG and output["echo"]["small"] == SMALL


def test_decode_and_encode_keep_every_number_and_refuse_what_is_not_json() -> None:
    from runpod_queue.emulator._jobs import decode_json, encode_json

    assert decode_json(b'{"n": 18446744073709551616, "s": "1234567890123456789012"}') == {
        "n": BIG,
        "s": "1234567890123456789012",
    }
    assert encode_json({"n": BIG, 1: [SMALL]}) == b'{"n":18446744073709551616,"1":[-9223372036854775809]}'
    for bad in (b"[1e400, 12345678901234567890123]", b"NaN", b"[" * 100_000 + b"1" * 20 + b"]" * 100_000):
        with pytest.raises(ValueError):
            decode_json(bad)
