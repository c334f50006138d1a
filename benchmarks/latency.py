"""Slider-to-plot latency of the dashboards against Panel's floor, in headless Chromium.

One ``panel serve`` process serves the dashboards and a trivial app (``_floor_app.py``: a slider
and a HoloViews curve that does almost nothing), one browser opens them all, and the moves alternate
between them, so all see the same machine load. A move is one arrow-key press on a slider handle;
its latency runs, in the page's own clock, from the key press to the last ColumnDataSource update it
causes ("data") and to the animation frame after it ("painted"). After a few warm-up moves, report
p50/p95 over ``--moves`` moves and the ratio to the floor's p50. Targets: p50 within 1.2x the
floor, p95 under 300 ms on 2 cores.

    python benchmarks/latency.py [--moves 50] [--warmup 5] [--only APP ...] [--write-results]

Prints a Markdown section and writes it to ``benchmarks/_out/latency.md`` (with ``--only``,
``latency_<apps>.md``); ``--write-results`` also replaces the "latency" section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import _browser as browser

HERE = Path(__file__).resolve().parent
FLOOR_APP = HERE / "_floor_app.py"
APPS = HERE.parent / "widgets" / "apps"
DASHBOARD_APPS = [APPS / "brownian_tree.py", APPS / "step_size.py", APPS / "hurst.py", APPS / "guidance.py",
                  APPS / "reynolds.py"]
OUT = HERE / "_out" / "latency.md"


def _adaptive_on(page) -> None:
    """Tick the step-size dashboard's adaptive switch (the tolerance slider acts only then)."""
    before = browser.data_signature(page)
    page.locator(".bk-Checkbox").filter(has_text="adaptive").locator("input").check()
    browser.wait_for_data_change(page, before)


def _paused(page) -> None:
    """Untick the Reynolds dashboard's run switch: the moves then measure the slider, not the stream."""
    page.locator(".bk-Checkbox").filter(has_text="run").locator("input").uncheck()
    page.wait_for_timeout(500)


# (row label, app name, slider title, handle, keys, set-up): move i presses keys[i % len(keys)] once;
# set-up (or None) runs once on the fresh page. Back-and-forth keys keep a slider inside its range.
SLIDERS = [
    ("floor: slider + HoloViews curve", "_floor_app", "x", "", ("ArrowRight",), None),
    ("Brownian tree: seed", "brownian_tree", "seed", "", ("ArrowRight",), None),
    ("Brownian tree: window end b", "brownian_tree", "zoom window", "upper", ("ArrowRight",), None),
    ("step size: log2 dt", "step_size", "log2 dt", "", ("ArrowLeft", "ArrowRight"), None),
    ("step size: log10 tol (adaptive)", "step_size", "log10 tol", "", ("ArrowLeft", "ArrowRight"), _adaptive_on),
    ("step size: seed", "step_size", "seed", "", ("ArrowRight",), None),
    ("Hurst: H", "hurst", "Hurst index H", "", ("ArrowLeft", "ArrowRight"), None),
    ("Hurst: K", "hurst", "OU terms K", "", ("ArrowRight", "ArrowLeft"), None),
    ("Hurst: gamma_max", "hurst", "gamma_max", "", ("ArrowRight", "ArrowLeft"), None),
    ("Hurst: seed", "hurst", "seed", "", ("ArrowRight",), None),
    ("guidance: w", "guidance", "guidance scale w", "", ("ArrowRight", "ArrowLeft"), None),
    ("guidance: NFE", "guidance", "NFE", "", ("ArrowRight", "ArrowLeft"), None),
    ("guidance: class", "guidance", "class c", "", ("ArrowRight", "ArrowLeft"), None),
    ("guidance: seed", "guidance", "seed", "", ("ArrowRight",), None),
    ("Reynolds: Re (paused)", "reynolds", "Reynolds number Re", "", ("ArrowRight", "ArrowLeft"), _paused),
    ("Reynolds: seed (paused, new run)", "reynolds", "seed", "", ("ArrowRight",), _paused),
]


def measure(moves: int, warmup: int, only: list[str] | None = None) -> dict[str, np.ndarray]:
    """Latencies in ms, shape (moves, 2) for (data, painted), per slider row (``only``: the rows of
    these apps, and the floor)."""
    apps = [app for app in DASHBOARD_APPS if only is None or app.stem in only]
    sliders = [row for row in SLIDERS if row[1] == "_floor_app" or only is None or row[1] in only]
    with browser.panel_server(FLOOR_APP, *apps) as server, browser.chromium() as chromium:
        rows = []
        for label, app, title, which, keys, set_up in sliders:
            page = browser.open_app(chromium, server.url(app))
            if set_up is not None:
                set_up(page)
            browser.install_probe(page)
            rows.append((label, page, browser.slider_handle(page, title, which), keys))
        samples: dict[str, list] = {label: [] for label, *_ in rows}
        for i in range(warmup + moves):
            for label, page, handle, keys in rows:  # interleaved: the same load for every row
                page.bring_to_front()
                browser.press(handle, keys[i % len(keys)])
                latency = browser.probe_latency(page)
                if i >= warmup:
                    samples[label].append(latency)
        return {label: np.asarray(values) for label, values in samples.items()}


def server_time_per_move(repeats: int = 50, only: list[str] | None = None) -> dict[str, float]:
    """Median ms of one dashboard update in this process (compute plus pushing the new columns),
    per dashboard and slider (``only``: these apps)."""
    import solverlab
    from solverlab.widgets import (BrownianTreeDashboard, GuidanceDashboard, HurstDashboard, ReynoldsDashboard,
                                   StepSizeDashboard)
    from solverlab.widgets import guidance, step_size

    solverlab.setup()

    def median_ms(dashboard, values, before_each=lambda: None) -> float:
        dashboard.__panel__()  # build the figures, whose sources every update refills
        times = []
        for value in values:
            before_each()
            start = time.perf_counter()
            dashboard.param.update(**value)
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    def frame_ms(dashboard, count) -> float:
        dashboard.__panel__()
        times = []
        for _ in range(count):
            start = time.perf_counter()
            dashboard.tick()
            times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)

    seeds = [{"seed": s % 100} for s in range(1, repeats + 1)]
    rows = {
        "brownian_tree": lambda: {"Brownian tree, seed": median_ms(BrownianTreeDashboard(), seeds)},
        "step_size": lambda: {
            "step size, log2 dt": median_ms(
                StepSizeDashboard(), [{"log2_dt": -5.0 - 0.25 * (i % 2)} for i in range(repeats)]),
            "step size, log10 tol (adaptive)": median_ms(
                StepSizeDashboard(adaptive=True), [{"log10_tol": -2.0 - 0.1 * (i % 2)} for i in range(repeats)]),
            "step size, seed": median_ms(StepSizeDashboard(), seeds),
            # sigma changes the SDE: the error sweep reruns (its cache cleared, as for a new value).
            "step size, sigma (new error sweep)": median_ms(
                StepSizeDashboard(), [{"sigma": 0.6 - 0.1 * (i % 2)} for i in range(repeats)],
                before_each=step_size.sweep.cache_clear),
        },
        "hurst": lambda: {
            "Hurst, H": median_ms(HurstDashboard(), [{"hurst": 0.3 + 0.01 * (i % 2)} for i in range(repeats)]),
            "Hurst, K": median_ms(HurstDashboard(), [{"K": 5 + (i % 2)} for i in range(repeats)]),
            "Hurst, seed": median_ms(HurstDashboard(), seeds),
        },
        "guidance": lambda: {
            "guidance, w (cached)": median_ms(GuidanceDashboard(), [{"w": 3.0 + 0.25 * (i % 2)} for i in range(repeats)]),
            # A w never seen: the references, density, contours and every method's error curve rerun.
            "guidance, w (new value)": median_ms(
                GuidanceDashboard(), [{"w": 3.0 + 0.25 * (i % 2)} for i in range(min(repeats, 10))],
                before_each=guidance.clear_caches),
            "guidance, NFE": median_ms(GuidanceDashboard(), [{"nfe": 10 + (i % 2)} for i in range(repeats)]),
            "guidance, seed (new reference)": median_ms(GuidanceDashboard(), seeds),
        },
        "reynolds": lambda: {
            "Reynolds, Re (cavity, paused)": median_ms(
                ReynoldsDashboard(run=False), [{"reynolds": (100, 150)[i % 2]} for i in range(repeats)]),
            "Reynolds, one frame (Kolmogorov, 40 ms budget)": frame_ms(
                ReynoldsDashboard(flow="Kolmogorov flow (periodic)"), repeats),
            "Reynolds, seed (new Kolmogorov run)": median_ms(
                ReynoldsDashboard(run=False, flow="Kolmogorov flow (periodic)"), seeds),
        },
    }
    return {label: ms for app, row in rows.items() if only is None or app in only for label, ms in row().items()}


def report(latency: dict[str, np.ndarray], server_ms: dict[str, float], moves: int) -> str:
    from _harness import machine, versions

    labels = list(latency)
    floor = np.median(latency[labels[0]][:, 0])
    lines = [
        "## Dashboard latency (slider move to plot, headless Chromium)",
        "",
        f"{machine()}; {versions('panel', 'bokeh', 'holoviews', 'jax', 'playwright')}; "
        f"Chromium {browser.chromium_version()}. {moves} moves per slider after warm-up, interleaved.",
        "",
        "| slider | p50 data (ms) | p95 data (ms) | p50 painted (ms) | p95 painted (ms) | p50 / floor p50 |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label in labels:
        data, painted = latency[label][:, 0], latency[label][:, 1]
        lines.append(
            f"| {label} | {np.median(data):.0f} | {np.percentile(data, 95):.0f} | {np.median(painted):.0f}"
            f" | {np.percentile(painted, 95):.0f} | {np.median(data) / floor:.2f} |"
        )
    worst_ratio = max(np.median(latency[label][:, 0]) / floor for label in labels[1:])
    worst_p95 = max(np.percentile(latency[label][:, 1], 95) for label in labels[1:])
    verdict = "met" if worst_ratio <= 1.2 and worst_p95 < 300 else "MISSED"
    lines += [
        "",
        "Server time per dashboard move (compute + column updates, in process): "
        + ", ".join(f"{label} {ms:.1f} ms" for label, ms in server_ms.items()) + ".",
        f"Targets (p50 <= 1.2x floor, p95 painted < 300 ms): {verdict}"
        f" (worst ratio {worst_ratio:.2f}, worst p95 {worst_p95:.0f} ms).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=50, help="measured moves per slider (default 50)")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured moves first (default 5)")
    parser.add_argument("--only", nargs="+", choices=[app.stem for app in DASHBOARD_APPS],
                        help="measure only these dashboards (and the floor); implies no --write-results")
    parser.add_argument("--write-results", action="store_true", help="also rewrite the section in RESULTS.md")
    args = parser.parse_args()
    reason = browser.chromium_missing()
    if reason:
        print(f"latency benchmark skipped: {reason}", file=sys.stderr)
        return 1
    latency = measure(args.moves, args.warmup, args.only)
    text = report(latency, server_time_per_move(only=args.only), args.moves)
    print(text)
    out = OUT if not args.only else OUT.with_name(f"latency_{'_'.join(args.only)}.md")
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    if args.write_results and not args.only:
        from _harness import write_section

        write_section("latency", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
