"""A no-op worker for the official `runpod` package: benchmarks run it both in our emulator and under the
official local test server (`--rp_serve_api`)."""

from typing import Any

import runpod


def handler(job: dict[str, Any]) -> Any:
    return {"ok": True}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
