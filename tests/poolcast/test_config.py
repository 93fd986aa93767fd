"""Run configuration: the shipped example file, overrides and clear errors."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from poolcast.config import PipelineConfig, load_config, parse_month
from poolcast.errors import InvalidParameterError

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_example_config_loads_every_section() -> None:
    config = load_config(REPO_ROOT / "config" / "example.toml")
    assert config.mapping == "online_retail"
    assert config.as_of == date(2011, 11, 1)
    assert config.features.rolling_windows == (3, 12)
    assert config.backtest.quantiles == (0.5, 0.8, 0.9, 0.95, 0.99)
    assert Path(config.source).name == "online_retail_sku_monthly.csv.gz"


def test_no_file_gives_embedded_defaults_under_the_work_dir(tmp_path: Path) -> None:
    config = load_config(work_dir=str(tmp_path))
    assert config == PipelineConfig(work_dir=tmp_path)
    assert config.mlflow_tracking_uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert config.outputs_db == tmp_path / "outputs.duckdb"


def test_command_line_overrides_win_and_none_keeps_the_file_value(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('source = "a.csv"\nmapping = "rossmann"\nas_of = "2015-06"\n')
    config = load_config(path, source="b.csv", mapping=None, as_of="2015-05")
    assert (config.source, config.mapping, config.as_of) == ("b.csv", "rossmann", date(2015, 5, 1))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("colour = 'red'\n", "unknown key 'colour'"),
        ("[backtest]\norigins = 3\n", "unknown key(s) ['origins']"),
        ("as_of = '2015-13'\n", "'2015-13' is not a month"),
        ("source = \n", "not valid TOML"),
    ],
)
def test_bad_config_files_name_the_key_or_value(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InvalidParameterError) as info:
        load_config(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize("text", ["2011-11", "2011-11-01"])
def test_parse_month_accepts_both_forms(text: str) -> None:
    assert parse_month(text, what="as_of") == date(2011, 11, 1)


def test_parse_month_rejects_a_mid_month_day() -> None:
    with pytest.raises(InvalidParameterError, match="YYYY-MM"):
        parse_month("2011-11-15", what="--as-of")
