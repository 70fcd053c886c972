"""An unmodified official generator worker; RPQ_TEST_AGGREGATE=1 sets return_aggregate_stream."""

import os

import runpod


def handler(job):
    for i in range(job["input"].get("n", 3)):
        if i == job["input"].get("fail_at"):
            raise RuntimeError(f"generator failed at {i}")
        yield {"token": i}


runpod.serverless.start(
    {"handler": handler, "return_aggregate_stream": os.environ.get("RPQ_TEST_AGGREGATE") == "1"}
)
