"""The README's screenshot: ``fractui demo`` run headless for a while, saved as SVG.

    python tools/screenshot.py docs/demo.svg [--seconds 25] [--size 160x48]

The demo's jobs arrive at random, so each run shows a different moment of a living fleet.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fractui.demo import Demo  # noqa: E402 (after the path: run from a checkout)
from fractui.tui.app import FractuiApp  # noqa: E402


async def shoot(path: str, seconds: float, size: tuple) -> None:
    demo = Demo(16, seed=1)
    try:
        demo.start()
        app = FractuiApp(demo.source, demo.config)
        async with app.run_test(size=size) as pilot:
            await pilot.pause(seconds)
            app.save_screenshot(os.path.basename(path), os.path.dirname(path) or ".")
    finally:
        demo.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--size", default="160x48")
    args = parser.parse_args()
    cols, rows = (int(n) for n in args.size.split("x"))
    asyncio.run(shoot(args.path, args.seconds, (cols, rows)))
    print("saved %s" % args.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
