"""Screenshots of the served dashboards for the README, taken in headless Chromium.

    python benchmarks/screenshots.py [--out widgets/screenshots]

Writes ``<out>/brownian_tree.png``: the Brownian tree dashboard with the tolerance raised to 10^-2.2,
so the leaves inside the zoom window are shaded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import _browser as browser

ROOT = Path(__file__).resolve().parents[1]


def brownian_tree(chromium, server, out: Path) -> Path:
    page = browser.open_app(chromium, server.url("brownian_tree"), width=1120, height=880)
    handle = browser.slider_handle(page, "log10 tol")
    for _ in range(8):  # -3.0 -> -2.2: depth 8, 64 leaves in [0.25, 0.5], every other one shaded
        browser.press(handle, "ArrowRight")
    page.get_by_text("tol = 6.31e-03").wait_for()  # text and plot data arrive in one message
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    path = out / "brownian_tree.png"
    page.screenshot(path=str(path), full_page=True)
    page.close()
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "widgets" / "screenshots")
    args = parser.parse_args()
    reason = browser.chromium_missing()
    if reason:
        print(f"no screenshots: {reason}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    with browser.panel_server(ROOT / "widgets" / "apps" / "brownian_tree.py") as server, browser.chromium() as chromium:
        print(brownian_tree(chromium, server, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
