"""`interlock bench` writes the documented structure (on a tiny run; no timing asserts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import pdp
from bench.stats import percentile, summarize


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0


def test_summary_against_a_baseline_reports_ratios() -> None:
    base = summarize("base", [1e-6] * 10)
    m = summarize("m", [3e-6] * 10).against(base)
    assert (m.p50, m.p99, m.baseline, m.ratio_p50, m.ratio_p99) == (3.0, 3.0, "base", 3.0, 3.0)
    assert m.throughput == round(1e6 / 3.0, 1)


def test_pdp_suite_result_structure() -> None:
    result = pdp.run(quick=True)
    names = [m["name"] for m in result["measurements"]]
    assert names == [
        "rego_raw_trivial",
        "decision_uncached",
        "decision_cached",
        "input_build",
        "engine_eval",
    ]
    for m in result["measurements"]:
        assert m["unit"] == "us"
        assert m["p50"] > 0
        assert m["p99"] >= m["p50"]
        if m["name"] != "rego_raw_trivial":
            assert m["baseline"] == "rego_raw_trivial"
            assert m["ratio_p99"] is not None
    assert all({"name", "value", "limit", "pass"} <= set(b) for b in result["budgets"])


def test_cli_writes_json_and_exit_status_follows_budgets(tmp_path: Path) -> None:
    out_json = tmp_path / "pdp.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "interlock.cli",
            "bench",
            "--suite",
            "pdp",
            "--quick",
            "--json",
            str(out_json),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(out_json.read_text())
    budgets = report["suites"][0]["budgets"]
    assert out.returncode == (0 if all(b["pass"] for b in budgets) else 1)
    assert "decision_uncached" in out.stdout
    assert report["machine"]["cpus"] >= 1


def test_unknown_suite_is_a_usage_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "bench", "--suite", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "unknown suite" in out.stderr


@pytest.mark.integration
def test_postgres_suite_runs_every_target_and_reports_budgets() -> None:
    """A real (short) run: pgbench against PostgreSQL, PgBouncer and the proxy."""
    from bench import postgres

    result = postgres.run(quick=True)
    names = {m["name"] for m in result["measurements"]}
    for target in ("direct", "pgbouncer", "interlock"):
        for mode in ("simple", "prepared"):
            for clients in (1, 16):
                assert f"{target}_{mode}_c{clients}" in names
    for m in result["measurements"]:
        assert m["throughput"] > 0
        assert m["p99"] >= m["p50"] > 0
    assert len(result["budgets"]) == 4


@pytest.mark.integration
def test_http_suite_measures_direct_mitmdump_and_interlock() -> None:
    """A real (short) run: three server processes, HTTP and HTTPS."""
    from bench import http

    result = http.run(quick=True)
    names = {m["name"] for m in result["measurements"]}
    assert names == {
        f"{t}_{s}" for t in ("direct", "mitmdump", "interlock") for s in ("http", "https")
    }
    for m in result["measurements"]:
        assert m["throughput"] > 0
        assert m["p99"] >= m["p50"] > 0
    assert len(result["budgets"]) == 4


@pytest.mark.integration
def test_extauthz_suite_measures_checks_and_envoy() -> None:
    """A real (short) run: no-op Check server, `interlock up`, app, three Envoys."""
    from bench import extauthz

    result = extauthz.run(quick=True)
    names = [m["name"] for m in result["measurements"]]
    assert names == [
        "check_noop_500",
        "check_interlock_500",
        "check_noop_1000",
        "check_interlock_1000",
        "envoy_plain",
        "envoy_noop_authz",
        "envoy_interlock",
    ]
    for m in result["measurements"]:
        assert m["n"] > 0
        assert m["p99"] >= m["p50"] > 0
        # Requests that time out on a saturated server are counted, not dropped silently.
        assert m["notes"]["errors"] >= 0
        if "noop" in m["name"] or m["name"] == "envoy_plain":
            assert m["notes"]["errors"] == 0
    budget = result["budgets"][0]
    at_1000 = next(m for m in result["measurements"] if m["name"] == "check_interlock_1000")
    assert budget["limit"] == 2.0
    assert budget["pass"] == (at_1000["p99"] <= 2.0 and at_1000["notes"]["errors"] == 0)


@pytest.mark.integration
def test_ssh_suite_compares_the_proxy_with_direct_openssh() -> None:
    from bench import ssh

    result = ssh.run(quick=True)
    by_name = {m["name"]: m for m in result["measurements"]}
    assert set(by_name) == {
        "exec_direct",
        "exec_interlock",
        "connect_direct",
        "connect_interlock",
        "bulk_direct",
        "bulk_interlock",
    }
    assert by_name["exec_interlock"]["baseline"] == "exec_direct"
    assert by_name["bulk_interlock"]["throughput"] > 0
    assert [b["limit"] for b in result["budgets"]] == [2.0, 0.35]
