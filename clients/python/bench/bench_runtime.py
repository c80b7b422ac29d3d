"""Measures the Python client through the daemon: a fresh Runtime's first
execute, then warm requests one at a time and from 64 asyncio tasks, with
this process's CPU time per request.

Usage: python bench_runtime.py ARTIFACT [REQUESTS]
(scripts/bench-python-client.sh runs it next to the Go runtime in process.)
"""

import asyncio
import json
import sys
import time
from pathlib import Path

from ociapp_runtime import Runtime

PAYLOAD = {"value": "benchmark"}


async def warm(runtime: Runtime, path: Path, tasks: int, requests: int) -> dict[str, float]:
    latencies: list[float] = []
    per_task = requests // tasks

    async def caller() -> None:
        for _ in range(per_task):
            start = time.perf_counter()
            await runtime.execute(path, PAYLOAD)
            latencies.append(time.perf_counter() - start)

    # Warm-up at the same concurrency: the pool scales out first.
    await asyncio.gather(*(runtime.execute(path, PAYLOAD) for _ in range(max(tasks * 4, 200))))
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(tasks)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    latencies.sort()
    n = len(latencies)
    return {
        "tasks": tasks,
        "requests": n,
        "p50_us": latencies[n // 2] * 1e6,
        "p99_us": latencies[n * 99 // 100] * 1e6,
        "req_per_s": n / wall,
        "client_cpu_us_per_req": cpu / n * 1e6,
    }


async def main() -> None:
    path = Path(sys.argv[1]).resolve()
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    results: dict[str, object] = {}
    # A fresh Runtime, the image loaded: start, then the first execute;
    # first on a new per-user state directory, then again on the state the
    # first left (the daemon remembers the files it verified).
    for key in ("fresh_runtime", "fresh_runtime_again"):
        start = time.perf_counter()
        async with Runtime(idle_timeout=60.0) as runtime:
            started = time.perf_counter()
            await runtime.execute(path, PAYLOAD)
            first = time.perf_counter()
            results[f"{key}_start_ms"] = (started - start) * 1e3
            results[f"{key}_first_execute_ms"] = (first - started) * 1e3
            results[f"{key}_start_to_first_response_ms"] = (first - start) * 1e3
            if key == "fresh_runtime_again":
                results["c1"] = await warm(runtime, path, 1, requests)
                results["c64"] = await warm(runtime, path, 64, requests * 4)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
