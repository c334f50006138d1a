"""Screenshots of the served dashboards for the README, taken in headless Chromium.

    python benchmarks/screenshots.py [--out widgets/screenshots] [--only NAME ...]

Writes ``<out>/brownian_tree.png``: the Brownian tree dashboard with the tolerance raised to 10^-2.2,
so the leaves inside the zoom window are shaded; and ``<out>/step_size.png``: the step-size dashboard
on the high-volatility CIR process (sigma = 2.2), where stochastic Heun's path is trapped below zero
and every solver's order drops; ``<out>/hurst.png``: the Hurst-index dashboard at the rough H = 0.2,
where the Markov approximation's variance turns Brownian below the time scale 1/gamma_max;
``<out>/guidance.png``: the guidance-scale dashboard at w = 5 towards class 2, with the methods'
low-NFE runs flagged unstable; ``<out>/reynolds.png``: the Reynolds-number dashboard on the cylinder
wake at Re = 100 once the vortex street has formed, with the lift and drag coefficients and the
Strouhal number.
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
    for _ in range(2):  # -2.0 -> -2.2: depth 8, 64 leaves in [0.25, 0.5], every other one shaded
        browser.press(handle, "ArrowLeft")
    page.get_by_text("tol = 6.31e-03").wait_for()  # text and plot data arrive in one message
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    path = out / "brownian_tree.png"
    page.screenshot(path=str(path), full_page=True)
    page.close()
    return path


def step_size(chromium, server, out: Path) -> Path:
    page = browser.open_app(chromium, server.url("step_size"), width=1120, height=1000)

    def choose(title: str, value: str) -> None:
        before = browser.data_signature(page)
        page.locator(".bk-input-group").filter(has_text=title).locator("select").select_option(value)
        browser.wait_for_data_change(page, before)

    choose("SDE", "CIR")
    handle = browser.slider_handle(page, "volatility")
    for _ in range(17):  # 0.5 -> 2.2, beyond Feller's condition (sigma^2 <= 2ab = 2)
        browser.press(handle, "ArrowRight")
    page.get_by_text("σ = 2.2").wait_for()
    browser.press(browser.slider_handle(page, "seed"), "ArrowRight")  # seed 1: a path that reaches 0
    page.get_by_text("trapped").wait_for()
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    path = out / "step_size.png"
    page.screenshot(path=str(path), full_page=True)
    page.close()
    return path


def hurst(chromium, server, out: Path) -> Path:
    page = browser.open_app(chromium, server.url("hurst"), width=1160, height=1080)
    handle = browser.slider_handle(page, "Hurst index H")
    for _ in range(10):  # 0.30 -> 0.20
        browser.press(handle, "ArrowLeft")
    page.get_by_text("H = 0.20").wait_for()
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    path = out / "hurst.png"
    page.screenshot(path=str(path), full_page=True)
    page.close()
    return path


def guidance(chromium, server, out: Path) -> Path:
    page = browser.open_app(chromium, server.url("guidance"), width=1180, height=1200)
    handle = browser.slider_handle(page, "guidance scale w")
    for _ in range(8):  # 3.00 -> 5.00: guided well beyond the class; the low-NFE runs of several methods break
        browser.press(handle, "ArrowRight")
    page.get_by_text("w = 5, class 0", exact=False).wait_for()
    handle = browser.slider_handle(page, "class c")
    for _ in range(2):  # class 2: the samples gather on the component at the top
        browser.press(handle, "ArrowRight")
    page.get_by_text("w = 5, class 2", exact=False).wait_for()
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    path = out / "guidance.png"
    page.screenshot(path=str(path), full_page=True)
    page.close()
    return path


def reynolds(chromium, server, out: Path) -> Path:
    page = browser.open_app(chromium, server.url("reynolds"), width=1240, height=900)
    page.locator(".bk-input-group").filter(has_text="flow").locator("select").select_option("cylinder wake")
    page.get_by_text("Strouhal number St", exact=False).first.wait_for(timeout=180_000)  # t > 30: shedding
    page.locator(".bk-Checkbox").filter(has_text="run").locator("input").uncheck()
    page.wait_for_timeout(500)
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    path = out / "reynolds.png"
    page.screenshot(path=str(path), full_page=True)
    page.close()
    return path


#: Screenshot name -> function(chromium, server, out) -> path of the PNG written.
SHOTS = {"brownian_tree": brownian_tree, "step_size": step_size, "hurst": hurst, "guidance": guidance, "reynolds": reynolds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "widgets" / "screenshots")
    parser.add_argument("--only", nargs="+", choices=sorted(SHOTS), help="take only these screenshots")
    args = parser.parse_args()
    reason = browser.chromium_missing()
    if reason:
        print(f"no screenshots: {reason}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    apps = ROOT / "widgets" / "apps"
    with browser.panel_server(*(apps / f"{name}.py" for name in args.only or SHOTS)) as server, \
            browser.chromium() as chromium:
        for name in args.only or SHOTS:
            print(SHOTS[name](chromium, server, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
