"""Runs two requests against the echo artifact through a Runtime.

    python runtime_demo.py [ARTIFACT]

ARTIFACT defaults to dist/echo-app-0.1.0.ociapp, what ociapp-build writes
for examples/echo-app. The Runtime starts an ociapp-runtime daemon (it must
be on PATH) and stops it, with its containers, on the way out.
"""

import asyncio
import sys
from pathlib import Path

from ociapp_runtime import Runtime


async def main(artifact: Path) -> None:
    async with Runtime(idle_timeout=5.0) as runtime:
        for value in ("hello", "world"):
            response = await runtime.execute(artifact, {"value": value})
            print(response)


if __name__ == "__main__":
    default = Path("dist/echo-app-0.1.0.ociapp")
    asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else default))
