"""An official worker whose start-up fitness check fails: it reports unhealthy and exits (rp_fitness.py)."""

import runpod


@runpod.serverless.register_fitness_check
def model_files():
    raise RuntimeError("model weights missing at /models")


def handler(job):
    return job["input"]


runpod.serverless.start({"handler": handler})
