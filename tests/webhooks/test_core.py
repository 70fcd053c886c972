"""The framework-agnostic core: sync and async callbacks, duplicates, concurrent repeats."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from runpod_queue import Job
from runpod_queue.webhooks import Delivery, WebhookReceiver, WebhookSigner

SECRET = "wh-secret-7f3a9c1e5b2d4f60"
BODY = json.dumps({"id": "job-1", "status": "COMPLETED", "output": {"x": 1}}).encode()


def test_sync_handle_with_sync_and_async_callbacks() -> None:
    signer = WebhookSigner(SECRET)
    seen: list[Any] = []

    async def async_callback(job: Job) -> None:
        seen.append(("async", job.id))

    for callback in (lambda job: seen.append(("sync", job.id)), async_callback):
        receiver = WebhookReceiver(signer, callback)
        token = signer.token()
        assert receiver.handle(token, BODY).status_code == 200
        duplicate = receiver.handle(token, BODY)
        assert duplicate.status_code == 200 and duplicate.duplicate
    assert seen == [("sync", "job-1"), ("async", "job-1")]


def test_async_handle_with_a_delivery_callback() -> None:
    signer = WebhookSigner(SECRET)
    got: list[Delivery] = []
    receiver = WebhookReceiver(signer, got.append, with_delivery=True)
    token = signer.token()
    delivery = asyncio.run(receiver.ahandle(token, BODY))
    assert delivery.accepted and got[0].nonce == token.split(".")[0]
    assert got[0].job is not None and got[0].job.output == {"x": 1} and got[0].body["id"] == "job-1"


def test_a_new_status_of_the_same_job_is_passed_on() -> None:
    signer = WebhookSigner(SECRET)
    seen: list[str] = []
    receiver = WebhookReceiver(signer, lambda job: seen.append(job.status.value))
    token = signer.token()
    receiver.handle(token, json.dumps({"id": "j", "status": "FAILED", "error": "x"}).encode())
    receiver.handle(token, json.dumps({"id": "j", "status": "COMPLETED", "output": 1}).encode())
    assert seen == ["FAILED", "COMPLETED"]


def test_a_repeat_arriving_while_the_first_is_processed_is_told_to_come_back() -> None:
    signer = WebhookSigner(SECRET)
    token = signer.token()
    receiver: WebhookReceiver
    repeats: list[int] = []

    def slow(job: Job) -> None:
        # While this delivery is processed, the same one arrives again.
        repeats.append(receiver.handle(token, BODY).status_code)

    receiver = WebhookReceiver(signer, slow)
    assert receiver.handle(token, BODY).status_code == 200
    assert repeats == [503]  # the repeat was answered, and only once the first was under way
    assert receiver.handle(token, BODY).duplicate  # once processed, a repeat is a plain duplicate


def test_a_signed_body_that_breaks_the_contract_is_400_never_500() -> None:
    # A 500 makes RunPod deliver again, forever; 400 says the body itself is wrong.
    signer = WebhookSigner(SECRET)
    receiver = WebhookReceiver(signer, lambda job: None)
    bodies = [
        b'{"id": "j", "status": "COMPLETED", "delayTime": 1e400}',
        b'{"id": "j", "status": "COMPLETED", "executionTime": Infinity}',
        b'{"id": "j", "status": "COMPLETED", "retries": NaN}',
        b'{"id": "j", "status": "COMPLETED", "delayTime": 1' + b"0" * 5000 + b"}",
        b'{"id": "j", "status": "COMPLETED", "output": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ]
    for body in bodies:
        delivery = receiver.handle(signer.token(), body)
        assert delivery.status_code == 400, (body[:60], delivery)
