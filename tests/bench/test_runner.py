"""`interlock bench` writes the documented structure (on a tiny run; no timing asserts)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from interlock.bench import runner, slo
from interlock.bench.report import write
from interlock.bench.stats import percentile, summarize


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


def _assert_pdp_structure(result: dict[str, Any]) -> None:
    names = [m["name"] for m in result["measurements"]]
    assert names == [
        "rego_raw_trivial",
        "decision_uncached",
        "decision_cached",
        "input_build",
        "engine_eval",
        "engine_eval_rego_cpp",
        "decision_uncached_rego_cpp",
        "decide_and_audit",
    ]
    *latencies, full = result["measurements"]
    assert (full["unit"], full["throughput"] > 0) == ("dec/s", True)
    for m in latencies:
        assert m["unit"] == "us"
        assert m["p50"] > 0
        assert m["p99"] >= m["p50"]
        assert [q for q, _ in m["quantiles"]][-1] == 100
        values = [v for _, v in m["quantiles"]]
        assert values == sorted(values), "quantiles rise with the percentile"
        if m["name"] != "rego_raw_trivial":
            assert m["baseline"] == "rego_raw_trivial"
            assert m["ratio_p99"] is not None
    assert {b["id"] for b in result["budgets"]} == {
        "pdp.uncached_p99_us",
        "pdp.cached_p99_us",
        "pdp.uncached_ratio_p99",
        "pdp.cached_ratio_p99",
        "pdp.decisions_per_s",
    }
    cached = next(m for m in result["measurements"] if m["name"] == "decision_cached")
    budget = next(b for b in result["budgets"] if b["id"] == "pdp.cached_p99_us")
    assert budget["value"] == cached["p99"]


def test_judging_uses_configured_limits_and_fails_on_errors() -> None:
    checks = [
        slo.check("pdp.cached_p99_us", 250.0),
        slo.check("http.http_rps_ratio", 0.95),
        slo.check("extauthz.check_p99_ms", 1.0, errors=3),
        slo.check("ssh.bulk_ratio", float("nan")),
    ]
    rows = slo.judge(checks, {"pdp.cached_p99_us": 200.0})
    by_id = {r["id"]: r for r in rows}
    assert by_id["pdp.cached_p99_us"]["limit"] == 200.0
    assert by_id["pdp.cached_p99_us"]["configured"] is True
    assert by_id["pdp.cached_p99_us"]["pass"] is False
    assert by_id["http.http_rps_ratio"]["pass"] is True, "0.95 >= the default 0.9"
    assert by_id["http.http_rps_ratio"]["configured"] is False
    assert by_id["extauthz.check_p99_ms"]["pass"] is False, "failed requests fail a budget"
    assert by_id["ssh.bulk_ratio"]["pass"] is False, "no measurement is not a pass"
    assert slo.unknown({"pdp.nope": 1.0, "pdp.cached_p99_us": 1.0}) == ["pdp.nope"]
    with pytest.raises(KeyError):
        slo.check("pdp.nope", 1.0)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_report_draws_curves_and_groups_from_a_result(tmp_path: Path) -> None:
    """The report on a hand-made result: every plot kind, the tables, the budget rows."""
    base = summarize("base", [i * 1e-6 for i in range(1, 200)])
    ours = summarize("interlock_x", [i * 2e-6 for i in range(1, 200)]).against(base)
    suite = {
        "suite": "demo",
        "about": "A demonstration suite.",
        "seconds": 1.0,
        "measurements": [base.to_json(), ours.to_json()],
        "budgets": slo.judge([slo.check("pdp.cached_p99_us", ours.p99)], {}),
        "curves": [
            {
                "title": "requests/s by concurrency",
                "x_label": "clients",
                "y_label": "requests/s",
                "series": {"base": [[1, 100], [16, 900]], "interlock": [[1, 90], [16, 700]]},
            }
        ],
    }
    report = {
        "command": "interlock bench --suite demo",
        "quick": True,
        "machine": runner.machine(),
        "seconds": 1.0,
        "suites": [suite],
        "passed": suite["budgets"][0]["pass"],
    }
    written = {p.name for p in write(report, tmp_path)}
    assert written == {
        "report.json",
        "report.md",
        "budgets.png",
        "latency-demo.png",
        "throughput-demo.png",
    }
    for png in ("budgets.png", "latency-demo.png", "throughput-demo.png"):
        width, height = _png_size(tmp_path / png)
        assert width > 300
        assert height > 100
    md = (tmp_path / "report.md").read_text()
    assert "## SLO budgets" in md
    assert "A demonstration suite." in md
    assert "| demo | decision p99, cache on |" in md
    assert "![throughput-demo.png](throughput-demo.png)" in md
    assert json.loads((tmp_path / "report.json").read_text())["suites"][0]["suite"] == "demo"


def test_tiny_run_writes_the_report_json_and_slo_table(tmp_path: Path) -> None:
    """`interlock bench --quick --report` on the two in-process suites, with one budget
    set impossibly tight in the config: the run exits 1, and says which budget failed."""
    cfg = tmp_path / "interlock.toml"
    cfg.write_text('[bench.budgets]\n"pdp.cached_p99_us" = 0.001\n"audit.enqueue_p99_us" = 1e9\n')
    out_dir, out_json = tmp_path / "report", tmp_path / "bench.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "interlock.cli",
            "bench",
            "--suite",
            "pdp,audit",
            "--quick",
            "-c",
            str(cfg),
            "--json",
            str(out_json),
            "--report",
            str(out_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1, out.stderr[-2000:]
    report = json.loads(out_json.read_text())
    assert [s["suite"] for s in report["suites"]] == ["pdp", "audit"]
    _assert_pdp_structure(report["suites"][0])
    assert report["machine"]["cpus"] >= 1
    assert report["machine"]["cpu_model"]
    assert report["passed"] is False
    budgets = {b["id"]: b for s in report["suites"] for b in s["budgets"]}
    assert budgets["pdp.cached_p99_us"]["pass"] is False
    assert budgets["pdp.cached_p99_us"]["limit"] == 0.001
    assert budgets["audit.enqueue_p99_us"]["pass"] is True
    assert budgets["audit.enqueue_p99_us"]["configured"] is True
    assert len(budgets) == 8
    # The terminal: per-suite tables, then the SLO table with the failing row.
    assert "suite pdp" in out.stdout
    assert "suite audit" in out.stdout
    assert "SLO budgets" in out.stdout
    assert any(
        line.startswith("FAIL") and "decision p99, cache on" in line
        for line in out.stdout.splitlines()
    )
    assert "budgets pass" in out.stdout
    # Progress goes to stderr, one line per phase when not a terminal.
    assert "pdp       [" in out.stderr
    assert "done in" in out.stderr
    # The report: Markdown naming every suite and plot, and the plots themselves.
    md = (out_dir / "report.md").read_text()
    for heading in ("# interlock benchmark report", "## SLO budgets", "## pdp", "## audit"):
        assert heading in md
    assert "**FAIL**" in md
    for png in ("budgets.png", "latency-pdp.png", "latency-audit.png"):
        assert f"]({png})" in md
        width, height = _png_size(out_dir / png)
        assert width > 300
        assert height > 100
    assert json.loads((out_dir / "report.json").read_text()) == report


def test_unknown_budget_in_config_is_a_usage_error(tmp_path: Path) -> None:
    cfg = tmp_path / "interlock.toml"
    cfg.write_text('[bench.budgets]\n"pdp.p99_typo" = 1\n')
    out = subprocess.run(
        [sys.executable, "-m", "interlock.cli", "bench", "--suite", "pdp", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "pdp.p99_typo" in out.stderr


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
    from interlock.bench import postgres

    result = postgres.run(quick=True)
    names = {m["name"] for m in result["measurements"]}
    for target in ("direct", "pgbouncer", "interlock"):
        for mode in ("simple", "prepared"):
            assert f"{target}_{mode}_r{postgres.RATE}" in names
            assert f"{target}_{mode}_c16" in names
    for m in result["measurements"]:
        assert m["throughput"] > 0
        assert m["p99"] >= m["p50"] > 0
    at_rate = [m for m in result["measurements"] if m["name"].endswith(f"_r{postgres.RATE}")]
    for m in at_rate:
        # Open loop: the achieved rate is the scheduled one, whatever the latency.
        assert 0.7 * postgres.RATE <= m["throughput"] <= 1.3 * postgres.RATE
    assert len(result["checks"]) == 4
    assert len(result["curves"]) == 4
    tps = result["curves"][0]["series"]["interlock"]
    assert [x for x, _ in tps] == [16]


@pytest.mark.integration
def test_http_suite_measures_direct_mitmdump_and_interlock() -> None:
    """A real (short) run: three server processes, HTTP and HTTPS."""
    from interlock.bench import http

    result = http.run(quick=True)
    names = {m["name"] for m in result["measurements"]}
    assert names == {
        f"{t}_{s}" for t in ("direct", "mitmdump", "interlock") for s in ("http", "https")
    }
    for m in result["measurements"]:
        assert m["throughput"] > 0
        assert m["p99"] >= m["p50"] > 0
        assert m["notes"]["errors"] == 0
    assert len(result["checks"]) == 4
    assert {tuple(c["series"]) for c in result["curves"]} == {("direct", "mitmdump", "interlock")}
    # The throughput budget reads the median of alternated rounds, not one pair of phases.
    by_name = {m["name"]: m for m in result["measurements"]}
    checks = {c["id"]: c["value"] for c in result["checks"]}
    for scheme in ("http", "https"):
        ours, bare = by_name[f"interlock_{scheme}"]["notes"], by_name[f"mitmdump_{scheme}"]["notes"]
        assert len(ours["round_rps"]) == len(bare["round_rps"]) == 2
        ratios = [a / b for a, b in zip(ours["round_rps"], bare["round_rps"], strict=True)]
        assert ours["round_ratios"] == pytest.approx(ratios, abs=0.01)
        median = statistics.median(ours["round_ratios"])
        assert checks[f"http.{scheme}_rps_ratio"] == pytest.approx(median, abs=0.002)


@pytest.mark.integration
def test_extauthz_suite_measures_checks_and_envoy() -> None:
    """A real (short) run: no-op Check server, `interlock up`, app, three Envoys."""
    from interlock.bench import extauthz

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
    check = result["checks"][0]
    at_1000 = next(m for m in result["measurements"] if m["name"] == "check_interlock_1000")
    assert check == {
        "id": "extauthz.check_p99_ms",
        "value": at_1000["p99"],
        "errors": at_1000["notes"]["errors"],
    }


@pytest.mark.integration
def test_ssh_suite_compares_the_proxy_with_direct_openssh() -> None:
    from interlock.bench import ssh

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
    assert by_name["exec_interlock"]["notes"]["errors"] == 0
    assert by_name["bulk_interlock"]["throughput"] > 0
    assert [c["id"] for c in result["checks"]] == ["ssh.exec_added_p50_ms", "ssh.bulk_ratio"]


@pytest.mark.integration
def test_end_to_end_suite_runs_every_protocol_through_one_interlock() -> None:
    """Twelve agents through the real proxies with the default policy: nothing the
    workload does is held or denied, and each protocol is compared with going direct."""
    from interlock.bench import e2e

    result = e2e.run(quick=True)
    by_name = {m["name"]: m for m in result["measurements"]}
    for protocol in e2e.PROTOCOLS:
        ours, base = by_name[f"{protocol}_interlock"], by_name[f"{protocol}_direct"]
        assert ours["baseline"] == base["name"]
        assert ours["notes"]["errors"] == 0, ours["notes"].get("first_error")
        assert base["notes"]["errors"] == 0, base["notes"].get("first_error")
        assert ours["n"] == base["n"] > 0
    assert [c["id"] for c in result["checks"]] == [f"e2e.{p}_added_p99_ms" for p in e2e.PROTOCOLS]


def test_a_suite_that_breaks_is_reported_and_the_others_still_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A suite that raises (a server that would not start, pgbench aborting) is an error
    row and a failed run, not a lost run: the other suites' results are still written."""

    def broken(quick: bool) -> dict[str, Any]:
        raise RuntimeError("pgbench failed: FATAL: query_wait_timeout")

    def fine(quick: bool) -> dict[str, Any]:
        m = summarize("interlock_x", [1e-6] * 10)
        return {"suite": "pdp", "measurements": [m.to_json()],
                "checks": [slo.check("pdp.cached_p99_us", m.p99)]}  # fmt: skip

    monkeypatch.setitem(runner.SUITES, "postgres", broken)
    monkeypatch.setitem(runner.SUITES, "pdp", fine)
    out_json = tmp_path / "out.json"
    code = runner.main("pdp,postgres", json_path=str(out_json), show_progress=False)
    assert code == 1
    report = json.loads(out_json.read_text())
    assert report["passed"] is False
    pdp_result, pg_result = report["suites"]
    assert pdp_result["budgets"][0]["pass"] is True
    assert "query_wait_timeout" in pg_result["error"]
    out = capsys.readouterr().out
    assert "suite postgres FAILED" in out
    assert "ERR  postgres" in out


@pytest.mark.integration
def test_mcp_suite_compares_the_gateway_with_direct_stdio() -> None:
    from interlock.bench import mcp

    result = mcp.run(quick=True)
    by_name = {m["name"]: m for m in result["measurements"]}
    assert set(by_name) == {"call_direct", "call_interlock"}
    assert by_name["call_interlock"]["baseline"] == "call_direct"
    assert by_name["call_interlock"]["notes"]["errors"] == 0
    assert by_name["call_direct"]["n"] == by_name["call_interlock"]["n"] == 400
    assert [c["id"] for c in result["checks"]] == ["mcp.call_added_p50_ms", "mcp.call_added_p99_ms"]
