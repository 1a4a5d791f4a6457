"""`interlock bench --report DIR`: a Markdown report with PNG plots, and the JSON beside it.

Three kinds of plot, each answering one question a person asks before putting interlock in
the path:

* `budgets.png`: how much of each budget the run used (value / limit, or limit / value for
  "at least" budgets), so anything right of the 1.0 line failed;
* `latency-<suite>.png`: latency against percentile on a "nines" axis (50, 90, 99, 99.9),
  interlock beside its baseline, so a tail that grows shows as lines drifting apart;
* `throughput-<suite>.png`: throughput (or latency) against concurrency or offered rate,
  so where interlock saturates, and the baseline does not, is visible at a glance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from interlock.bench.stats import THROUGHPUT_UNITS

PNG_DPI = 96


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - only without the test extra, which CI has
        raise SystemExit(
            "--report needs matplotlib: pip install -e '.[test]' (the README set-up does)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write(report: dict[str, Any], target: Path) -> list[Path]:
    """Write report.md, report.json and the plots into `target`; returns what was written.
    Plots render in two worker processes (about half a second of CPU each)."""
    target.mkdir(parents=True, exist_ok=True)
    _pyplot()
    written = [target / "report.json"]
    (target / "report.json").write_text(json.dumps(report, indent=2) + "\n", "utf-8")
    budgets = [b | {"suite": s["suite"]} for s in report["suites"] for b in s["budgets"]]
    images: dict[str, list[str]] = {}
    jobs: list[tuple[Callable[..., Path], tuple[Any, ...]]] = []
    if budgets:
        jobs.append((_budget_plot, (budgets, target / "budgets.png")))
    for suite in report["suites"]:
        name = suite["suite"]
        images[name] = []
        groups = suite.get("latency_groups") or _default_groups(suite)
        if groups:
            jobs.append((_latency_plot, (suite, groups, target / f"latency-{name}.png")))
            images[name].append(f"latency-{name}.png")
        if suite.get("curves"):
            jobs.append((_curve_plot, (suite, target / f"throughput-{name}.png")))
            images[name].append(f"throughput-{name}.png")
    # spawn, not fork: the runner process has used gRPC and threads by now.
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("spawn")) as pool:
        written += list(pool.map(_render, jobs))
    (target / "report.md").write_text(_markdown(report, budgets, images), "utf-8")
    written.append(target / "report.md")
    return written


# --- plots ------------------------------------------------------------------------------


def _render(job: tuple[Callable[..., Path], tuple[Any, ...]]) -> Path:
    fn, args = job
    return fn(_pyplot(), *args)


def _used(b: dict[str, Any]) -> float:
    """Fraction of the budget used: <= 1 passes."""
    value, limit = float(b["value"]), float(b["limit"])
    if b["op"] == "<=":
        return value / limit if limit else math.inf
    return limit / value if value > 0 else math.inf


def _budget_plot(plt: Any, budgets: list[dict[str, Any]], path: Path) -> Path:
    height = 0.9 + 0.32 * len(budgets)
    fig, ax = plt.subplots(figsize=(9, height))
    labels = [f"{b['suite']}: {b['label']}" for b in budgets]
    used = [min(max(_used(b), 0.012), 100.0) for b in budgets]
    colors = ["#2a9d3f" if b["pass"] else "#d1342f" for b in budgets]
    ys = list(range(len(budgets)))[::-1]
    ax.barh(ys, [u - 0.01 for u in used], left=0.01, color=colors, height=0.6)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.set_xlim(0.01, 100)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_xlabel("share of budget used (log scale; right of the line = over budget)")
    ax.set_title("SLO budgets: green passed, red failed")
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
    return path


def _default_groups(suite: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for m in suite["measurements"]:
        if m.get("baseline") and m.get("quantiles"):
            out.append({"title": m["name"], "series": [m["baseline"], m["name"]]})
    return out


def _nines(q: float) -> float:
    """Percentile on a log scale of "nines": 90 -> 1, 99 -> 2, 99.9 -> 3."""
    return -math.log10(max(1e-4, 1 - q / 100))


def _latency_plot(
    plt: Any, suite: dict[str, Any], groups: list[dict[str, Any]], path: Path
) -> Path:
    by_name = {m["name"]: m for m in suite["measurements"]}
    groups = [g for g in groups if any(by_name.get(s, {}).get("quantiles") for s in g["series"])]
    fig, axes = _grid(plt, len(groups))
    ticks = [0, 50, 90, 99, 99.9]
    for ax, group in zip(axes.flat, groups, strict=False):
        unit = ""
        for name in group["series"]:
            m = by_name.get(name)
            if not m or not m.get("quantiles"):
                continue
            unit = m["unit"]
            qs = [q for q, _ in m["quantiles"] if q < 100]
            vs = [v for q, v in m["quantiles"] if q < 100]
            style = "-" if "interlock" in name else "--"
            ax.plot([_nines(q) for q in qs], vs, style, marker=".", label=name)
        ax.set_xticks([_nines(t) for t in ticks], [f"{t:g}" for t in ticks])
        ax.set_xlabel("percentile")
        ax.set_ylabel(f"latency ({unit})")
        ax.set_yscale("log")
        _finish_axes(ax, group["title"])
    return _save(plt, fig, axes, len(groups), f"{suite['suite']}: latency by percentile", path)


def _curve_plot(plt: Any, suite: dict[str, Any], path: Path) -> Path:
    curves = suite["curves"]
    fig, axes = _grid(plt, len(curves))
    for ax, curve in zip(axes.flat, curves, strict=False):
        for name, points in curve["series"].items():
            xs = [p[0] for p in points]
            ys = [p[1] for p in points]
            style = "-" if "interlock" in name else "--"
            ax.plot(xs, ys, style, marker="o", label=name)
        ax.set_xlabel(curve["x_label"])
        ax.set_ylabel(curve["y_label"])
        if curve.get("log_y"):
            ax.set_yscale("log")
        _finish_axes(ax, curve["title"])
    return _save(plt, fig, axes, len(curves), f"{suite['suite']}: load curves", path)


def _grid(plt: Any, n: int) -> tuple[Any, Any]:
    """Two plots a row."""
    cols = min(2, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 3.6 * rows), squeeze=False)
    return fig, axes


def _finish_axes(ax: Any, title: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def _save(plt: Any, fig: Any, axes: Any, used: int, title: str, path: Path) -> Path:
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.suptitle(f"{title} (dashed = baseline)")
    fig.tight_layout()
    fig.savefig(path, dpi=PNG_DPI)
    plt.close(fig)
    return path


# --- Markdown ---------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def budget_rows(budgets: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| suite | budget | measured | limit | result |",
        "|---|---|---:|---:|---|",
    ]
    for b in budgets:
        unit = "" if b["unit"] == "x" else f" {b['unit']}"
        measured = f"{_fmt(b['value'])}{unit}"
        if b.get("errors"):
            measured += f" ({b['errors']} errors)"
        limit = f"{b['op']} {b['limit']:g}{unit}" + (" (configured)" if b["configured"] else "")
        verdict = "PASS" if b["pass"] else "**FAIL**"
        rows.append(f"| {b['suite']} | {b['label']} | {measured} | {limit} | {verdict} |")
    return rows


def _measurement_rows(suite: dict[str, Any]) -> list[str]:
    rows = [
        "| measurement | n | p50 | p99 | mean | throughput | baseline | x p50 | x p99 |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for m in suite["measurements"]:
        unit = m["unit"]
        if unit in THROUGHPUT_UNITS:
            rows.append(
                f"| {m['name']} | {m['n']} | | | | {_fmt(m['throughput'])} {unit} "
                f"| {m['baseline'] or ''} | | |"
            )
            continue
        per_s = f"{_fmt(m['throughput'])}/s" if m.get("throughput") else ""
        rows.append(
            f"| {m['name']} | {m['n']} | {_fmt(m['p50'])} {unit} | {_fmt(m['p99'])} {unit} "
            f"| {_fmt(m['mean'])} {unit} | {per_s} | {m['baseline'] or ''} "
            f"| {_fmt(m['ratio_p50']) if m.get('ratio_p50') else ''} "
            f"| {_fmt(m['ratio_p99']) if m.get('ratio_p99') else ''} |"
        )
    return rows


def _markdown(
    report: dict[str, Any], budgets: list[dict[str, Any]], images: dict[str, list[str]]
) -> str:
    machine = report["machine"]
    load = ", ".join(f"{x:.2f}" for x in machine["loadavg"])
    passed = sum(1 for b in budgets if b["pass"])
    lines = [
        "# interlock benchmark report",
        "",
        f"`{report['command']}` on {machine['time']}: {machine['cpu_model']}, "
        f"{machine['cpus']} CPUs, {machine['memory_gib']} GiB, {machine['platform']}, "
        f"Python {machine['python']}; load average at start {load}. "
        f"{'Quick run (fewer, shorter phases). ' if report['quick'] else ''}"
        f"Every suite ran its baseline in the same run; ratios compare the two.",
        "",
        "## SLO budgets",
        "",
        f"**{passed} of {len(budgets)} budgets pass.**"
        + "".join(f" Suite {s['suite']} did not finish." for s in report["suites"] if "error" in s),
        "",
        *budget_rows(budgets),
        "",
    ]
    if budgets:
        lines += ["![share of each budget used](budgets.png)", ""]
    for suite in report["suites"]:
        lines += [f"## {suite['suite']}", ""]
        if suite.get("about"):
            lines += [suite["about"], ""]
        if suite.get("error"):
            lines += [f"**The suite did not finish:** `{suite['error']}`", ""]
        lines += [f"Ran {suite['seconds']:.0f} s.", "", *_measurement_rows(suite), ""]
        for image in images.get(suite["suite"], []):
            lines += [f"![{image}]({image})", ""]
    lines += [
        "## How to read the plots",
        "",
        "Latency plots put the percentile on a log axis of nines, so p50, p90, p99 and",
        "p99.9 are evenly spaced: the tail gets as much room as the median. Dashed lines are",
        "baselines; a solid interlock line that stays close to its dashed baseline all the",
        "way right adds little, one that bends up at the right adds queueing in the tail.",
        "Load curves show throughput (or latency) as concurrency or offered rate grows; a",
        "flat interlock line below a rising baseline is where interlock saturates.",
        "",
    ]
    return "\n".join(lines)
