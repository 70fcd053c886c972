"""An official RunPod worker whose start-up fitness check fails until its model file exists.

`rpq serve unfit=examples/unfit_worker.py --runpod-worker` runs it unmodified: the check fails, the worker
reports itself unhealthy and exits (runpod-python's `rp_fitness.py`), the emulator restarts it, and it fails
again — a crash loop, as `rpq why` and `rpq workers` show it. Create the file (`touch model.bin`, or set
MODEL_PATH) and the next restart is healthy. Needs the `runpod` package (1.11 or later).
"""

import os
from pathlib import Path

import runpod

MODEL = Path(os.environ.get("MODEL_PATH", "model.bin"))


@runpod.serverless.register_fitness_check
def model_files() -> None:
    if not MODEL.exists():
        raise RuntimeError(f"model weights missing at {MODEL}")


def handler(job: dict) -> dict:
    return {"model": str(MODEL), "echo": job["input"]}


runpod.serverless.start({"handler": handler})
