"""A worker file written for the official package, unmodified: it starts the worker at import time."""

import runpod


def handler(job):
    return {"doubled": job["input"]["n"] * 2}


def other(job):
    return "other"


def streamer(job):
    yield "a"
    yield "b"


runpod.serverless.start({"handler": streamer, "return_aggregate_stream": True})
