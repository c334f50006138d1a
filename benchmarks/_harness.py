"""Shared benchmark plumbing: timing with compile time apart, machine facts, RESULTS.md sections.

Every benchmark runs ours and a peer on the same work in one process, reports medians of several runs
and the ratio, and rewrites its own section of ``RESULTS.md`` (one section per benchmark and device).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import statistics
import time
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def time_call(fn, *args, repeats: int = 9, block=None) -> dict:
    """Compile (first call) apart from steady-state runs; returns seconds: compile, median, min, runs."""
    import jax

    block = block or jax.block_until_ready
    t0 = time.perf_counter()
    block(fn(*args))
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        block(fn(*args))
        runs.append(time.perf_counter() - t0)
    median = statistics.median(runs)
    return {"compile": max(first - median, 0.0), "median": median, "min": min(runs), "runs": runs}


def machine() -> str:
    """One line: CPU model and cores (or the accelerator), OS, Python and key package versions."""
    import jax

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        model = platform.processor() or ""
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        hw = f"CPU {model}, {os.cpu_count()} cores"
    else:
        hw = f"{dev.platform.upper()} {getattr(dev, 'device_kind', dev)}"
    return f"{hw}; {platform.system()} {platform.release()}; Python {platform.python_version()}"


def versions(*names: str) -> str:
    out = []
    for name in names:
        try:
            out.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            out.append(f"{name} (not installed)")
    return ", ".join(out)


def device_kind() -> str:
    import jax

    return jax.devices()[0].platform


def write_section(name: str, body: str) -> None:
    """Replace (or add) the section ``name`` of RESULTS.md, dated, keeping every other section."""
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    begin, end = f"<!-- begin {name} -->", f"<!-- end {name} -->"
    block = f"{begin}\n{body.rstrip()}\n\n_Measured {stamp}._\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
