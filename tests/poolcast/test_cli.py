"""The poolcast command line (typer CliRunner)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from datetime import date
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
    data = tmp_path / "data.csv"
    data.write_text("Store,Month,Sales\n1,2015-01,3\n")
    result = runner.invoke(
        app,
        [
            "run",
            "--source",
            str(data),
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
            "source": str(data),
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
    # gaps.csv: only A 2024-04 (sales 6) exceeds a cap of 5. The inferred as-of is the data's
    # last month, 2024-04 (too few SKUs to judge it partial), and every SKU is completed to
    # it: A gets 2024-03 and 2024-04 (its quarantined month), B gets 2024-04: three gap months
    assert payload["by_rule"] == {"sales_absurd": 1}
    assert payload["rows_accepted"] == 4
    assert payload["gap_policy"] == "zero"
    assert payload["as_of"] == "2024-04-01"
    assert payload["gaps"] == 3


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


# ----------------------------------------------------- one line, every command, --debug

REPO_ROOT = Path(__file__).resolve().parents[2]


def _poolcast(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a fresh interpreter (stderr kept apart)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("POOLCAST_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "poolcast.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_with_a_missing_source_fails_before_prefect_starts(tmp_path: Path) -> None:
    proc = _poolcast(
        "run", "--source", "nope.csv", "--work-dir", str(tmp_path / "wd"), cwd=tmp_path
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "poolcast run: error: nope.csv: file not found; check --source"
    ]
    assert not (tmp_path / "wd").exists()


def test_run_with_a_bad_config_fails_before_anything_runs_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[backtest]\nn_origins = "six"\nn_samples = -5\n')
    proc = _poolcast("run", "--source", "x.csv", "--config", str(config), cwd=tmp_path)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"poolcast run: error: {config}: ")
    assert "[backtest] n_origins = 'six'" in lines[0]
    assert "[backtest] n_samples = -5" in lines[0]
    assert "an integer >= 1" in lines[0]
    assert not (tmp_path / ".poolcast").exists()  # nothing ran, nothing written


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("[features]\nhorizons = 0\n")
    proc = _poolcast("--debug", "run", "--source", "x.csv", "--config", str(config), cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "InvalidParameterError" in proc.stderr
    assert "[features] horizons = 0" in proc.stderr


def test_run_help_lists_every_setting_with_its_default() -> None:
    from poolcast.config import settings

    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    for row in settings():
        assert f"{row['key']} = {row['default']}" in result.output, row["key"]


def test_leaderboard_on_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "outputs.duckdb"
    db.write_text("sku,month,sales\nA,2024-01,1\n")
    result = runner.invoke(app, ["leaderboard", "--outputs-db", str(db)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"{db}: is not a DuckDB outputs database" in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_leaderboard_on_a_locked_database_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "outputs.duckdb"
    _write_outputs_db(db)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(60)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = runner.invoke(app, ["leaderboard", "--outputs-db", str(db)])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"{db}: the outputs database is locked by another process" in lines[0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["validate", "{tmp}"], "is a directory"),
        (["validate", "{tmp}/bad.csv"], "line 3: invalid UTF-8 byte"),
        (["simulate", "--out", "{tmp}/bad.csv/panel.parquet", "--quiet"], "bad.csv"),
        (["simulate", "--out", "{tmp}/p.parquet", "--months", "0", "--quiet"], "months"),
        (["leaderboard", "--outputs-db", "{tmp}/bad.csv"], "not a DuckDB outputs database"),
    ],
)
def test_every_command_ends_a_failure_in_one_line_and_exit_1(
    tmp_path: Path, args: list[str], fragment: str
) -> None:
    (tmp_path / "bad.csv").write_bytes(b"sku,month,sales\nA,2024-01,1\nA\xfe,2024-02,2\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(
        app, [*argv, "--work-dir", str(tmp_path)] if argv[0] == "validate" else argv
    )
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"poolcast {argv[0]}: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_validate_reports_the_inferred_as_of(tmp_path: Path) -> None:
    path = REPO_ROOT / "data" / "example" / "online_retail_sku_monthly.csv.gz"
    result = runner.invoke(
        app,
        [
            "validate",
            str(path),
            "--mapping",
            "online_retail",
            "--work-dir",
            str(tmp_path),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["as_of"] == "2011-11-01"
    assert payload["partial_month"] == "2011-12-01"
    assert payload["by_rule"] == {"month_partial": payload["rows_quarantined"]}
    assert "2011-12 is partial" in payload["as_of_note"]


@pytest.mark.filterwarnings("ignore:Logger .prefect.flow_runs. attempted to send logs")
def test_prefect_logs_no_traceback_for_a_poolcast_error_unless_debug() -> None:
    import logging

    from poolcast import cli
    from poolcast.errors import SourceError

    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("prefect.flow_runs")
    handler = Keep()
    logger.addHandler(handler)
    try:
        cli._quiet_expected_tracebacks()
        for exc in (SourceError("x.csv: file not found", source="x.csv"), RuntimeError("bug")):
            try:
                raise exc
            except Exception:
                logger.error("Encountered exception during execution: %r", exc, exc_info=True)
        cli._State.debug = True
        try:
            raise SourceError("y.csv: file not found", source="y.csv")
        except Exception:
            logger.error("again", exc_info=True)
    finally:
        cli._State.debug = False
        logger.removeHandler(handler)
    assert [r.exc_info is None for r in records] == [True, False, False]


def test_dashboard_without_outputs_exits_with_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["dashboard", "--work-dir", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("poolcast dashboard: error: ")
    assert str(tmp_path / "outputs.duckdb") in lines[0] and "poolcast run" in lines[0]
    (tmp_path / "outputs.duckdb").write_text("not a database")
    result = runner.invoke(app, ["dashboard", "--work-dir", str(tmp_path)])
    assert result.exit_code == 1 and "cannot be read as a DuckDB database" in result.stderr


def test_plan_template_cuts_a_source_into_sales_and_plan(tmp_path: Path) -> None:
    src = tmp_path / "ross.csv"
    rows = [
        f"{store},2015-{m:02d},{100 * m},{10 * m},{20 + m},{9 + m},0,{m}"
        for store in (1, 2)
        for m in range(1, 8)
    ]
    src.write_text(
        "Store,Month,Sales,Customers,OpenDays,PromoDays,StateHolidayDays,SchoolHolidayDays\n"
        + "\n".join(rows)
        + "\n"
    )
    sales, plan = tmp_path / "cut.csv", tmp_path / "plan.csv"
    result = runner.invoke(
        app,
        ["plan-template", str(src), "--mapping", "rossmann", "--as-of", "2015-04",
         "--sales-out", str(sales), "--plan-out", str(plan), "--months", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "8 rows up to 2015-04" in result.output and "4 rows" in result.output
    cut = pl.read_csv(sales)
    assert cut["Month"].unique().sort().to_list() == ["2015-01", "2015-02", "2015-03", "2015-04"]
    planned = pl.read_csv(plan)
    assert planned.columns == [
        "Store", "Month", "PromoDays", "OpenDays", "StateHolidayDays", "SchoolHolidayDays"
    ]  # fmt: skip
    assert planned.select("Store", "Month", "OpenDays").rows() == [
        (1, "2015-05", 25), (1, "2015-06", 26), (2, "2015-05", 25), (2, "2015-06", 26)
    ]  # fmt: skip
    bad = runner.invoke(
        app,
        ["plan-template", str(tmp_path / "nope.csv"), "--as-of", "2015-04",
         "--sales-out", str(sales), "--plan-out", str(plan)],
    )  # fmt: skip
    assert bad.exit_code == 1 and "nope.csv" in bad.output


def test_leaderboard_on_a_file_that_is_not_a_database_fails_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "outputs.duckdb").write_text("not a database\n" * 100)
    result = runner.invoke(app, ["leaderboard", "--work-dir", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not a DuckDB outputs database" in lines[0]


def test_leaderboard_reads_a_publication_read_only_while_a_writer_holds_it(tmp_path: Path) -> None:
    import duckdb

    from poolcast.publish import publish_run

    db = tmp_path / "outputs.duckdb"
    board = pl.DataFrame({"candidate": ["glmm"], "status": ["ok"], "scaled_pinball": [0.25]})
    publish_run(
        db,
        run_id="r9",
        as_of=date(2024, 6, 1),
        tables={"leaderboard": board},
        champion="glmm",
        registry_version="4",
    )
    with duckdb.connect(str(db), read_only=True):  # another reader holds it open
        result = runner.invoke(app, ["leaderboard", "--outputs-db", str(db)])
    assert result.exit_code == 0, result.output
    assert "run r9 as of 2024-06-01: champion glmm (registry v4)" in result.output
    assert "| glmm | ok | 0.250 |" in result.output
