"""The poolcast command line (typer CliRunner)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from poolcast.cli import app

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
runner = CliRunner()


def test_validate_json(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "validate",
            str(FIXTURES / "bad_rows.csv"),
            "--as-of",
            "2024-06",
            "--work-dir",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    # bad_rows.csv: 30 rows, 24 of them bad (see tests/poolcast/test_validation.py)
    assert payload["rows_in"] == 30
    assert payload["rows_accepted"] == 6
    assert payload["rows_quarantined"] == 24
    assert payload["duplicates_collapsed"] == 2
    assert payload["gaps"] == 7  # every SKU completed to the as-of (test_validation.py)
    q_path = Path(payload["quarantine_path"])
    assert q_path.is_file() and q_path.is_relative_to(tmp_path)
    assert pl.read_csv(q_path).height == 25


def test_validate_prints_counts(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "validate",
            str(FIXTURES / "gaps.csv"),
            "--work-dir",
            str(tmp_path),
            "--gap-policy",
            "zero",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "rows in" in result.stdout and "gaps (zero)" in result.stdout


def test_validate_broken_file_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["validate", str(FIXTURES / "semicolon.csv"), "--work-dir", str(tmp_path), "--json"]
    )
    assert result.exit_code != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "semicolon.csv" in lines[0] and "wrong delimiter" in lines[0]
    assert "Traceback" not in result.output


def test_validate_missing_file(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["validate", str(tmp_path / "nope.csv"), "--work-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "nope.csv" in result.stderr and "not found" in result.stderr


def test_validate_all_rows_bad_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "allbad.csv"
    path.write_text("sku,month,sales\nA,2024-01,-1\n")
    result = runner.invoke(app, ["validate", str(path), "--work-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "every row was quarantined" in result.stderr


def test_validate_unknown_mapping(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "validate",
            str(FIXTURES / "gaps.csv"),
            "--mapping",
            "nosuch",
            "--work-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 1
    assert "nosuch" in result.stderr


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_simulate_writes_panel_and_truth(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"sim{suffix}"
    result = runner.invoke(
        app,
        [
            "simulate",
            "--skus",
            "25",
            "--months",
            "18",
            "--family",
            "negbin",
            "--seed",
            "4",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    frame = pl.read_csv(out) if suffix == ".csv" else pl.read_parquet(out)
    assert frame.height == 25 * 18
    truth = json.loads((tmp_path / "sim.truth.json").read_text())
    assert truth["family"] == "negbin"
    assert len(truth["sku_effects"]["sku"]) == 25


def test_simulate_bad_family(tmp_path: Path) -> None:
    result = runner.invoke(app, ["simulate", "--family", "gamma", "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 1
    assert "family" in result.stderr


def test_run_calls_the_flow_with_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict] = []
    fake = types.ModuleType("flows.monthly_retrain")
    fake.monthly_retrain = lambda **kw: calls.append(kw) or "summary-ok"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "flows.monthly_retrain", fake)
    result = runner.invoke(
        app,
        [
            "run",
            "--source",
            "data.csv",
            "--mapping",
            "rossmann",
            "--as-of",
            "2015-06",
            "--work-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert calls == [
        {
            "source": "data.csv",
            "mapping": "rossmann",
            "as_of": "2015-06-01",
            "config_path": None,
            "work_dir": str(tmp_path),
        }
    ]
    assert "summary-ok" in result.stdout


def test_run_without_source(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--work-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no source" in result.stderr


def test_validate_reads_caps_and_gap_policy_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "poolcast.toml"
    config.write_text('[validation]\nsales_cap = 5\ngap_policy = "zero"\n')
    result = runner.invoke(
        app,
        [
            "validate",
            str(FIXTURES / "gaps.csv"),
            "--config",
            str(config),
            "--work-dir",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    # gaps.csv: only A 2024-04 (sales 6) exceeds a cap of 5; A is then 2024-01..02 and is
    # completed to the panel's end (B's 2024-03): one trailing gap month
    assert payload["by_rule"] == {"sales_absurd": 1}
    assert payload["rows_accepted"] == 4
    assert payload["gap_policy"] == "zero"
    assert payload["gaps"] == 1


def _write_outputs_db(path: Path) -> None:
    import duckdb

    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE runs (run_id VARCHAR, as_of DATE, champion VARCHAR, published_at TIMESTAMP)"
    )
    con.execute(
        "INSERT INTO runs VALUES ('old', DATE '2011-10-01', 'moving_average', TIMESTAMP '2026-01-01 00:00'),"
        " ('new', DATE '2011-11-01', 'glmm_nb2_ri', TIMESTAMP '2026-02-01 00:00')"
    )
    con.execute(
        "CREATE TABLE leaderboard (run_id VARCHAR, candidate VARCHAR, status VARCHAR, scaled_pinball DOUBLE)"
    )
    con.execute(
        "INSERT INTO leaderboard VALUES ('old', 'moving_average', 'ok', 1.0),"
        " ('new', 'glmm_nb2_ri', 'ok', 0.5), ('new', 'gee_poisson_ar1', 'failed', NULL)"
    )
    con.close()


def test_leaderboard_prints_the_latest_run_as_markdown(tmp_path: Path) -> None:
    _write_outputs_db(tmp_path / "outputs.duckdb")
    result = runner.invoke(app, ["leaderboard", "--work-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "run new as of 2011-11-01: champion glmm_nb2_ri" in result.output
    assert "| glmm_nb2_ri | ok | 0.500 |" in result.output
    assert "| gee_poisson_ar1 | failed | - |" in result.output
    assert "moving_average" not in result.output


def test_leaderboard_without_a_database_fails_with_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["leaderboard", "--work-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no outputs database" in result.output
