"""Run configuration: the shipped example file, overrides and clear errors."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from poolcast.config import (
    BacktestConfig,
    PipelineConfig,
    load_config,
    parse_month,
    settings,
    settings_markdown,
)
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
        ("[backtest]\norigins = 3\n", "[backtest] origins: unknown key"),
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


# --------------------------------------------------------------------------- typed settings


@pytest.mark.parametrize(
    ("text", "key", "value", "valid"),
    [
        (
            '[backtest]\nn_origins = "six"\n',
            "[backtest] n_origins",
            "'six'",
            "an integer with 1 <= x <= 12 or none",
        ),
        ("[backtest]\nn_samples = -5\n", "[backtest] n_samples", "-5", "an integer >= 1"),
        (
            "[backtest]\nquantiles = [0.5, 1.5]\n",
            "[backtest] quantiles[1]",
            "1.5",
            "numbers with 0 < x < 1",
        ),
        ("[features]\nhorizons = 0\n", "[features] horizons", "0", "1 <= x <= 12"),
        (
            '[backtest]\nselection_metric = "accuracy"\n',
            "[backtest] selection_metric",
            "'accuracy'",
            "scaled_pinball, mase",
        ),
        ("[backtest]\nn_samples = true\n", "[backtest] n_samples", "True", "an integer >= 1"),
        ('[validation]\ngap_policy = "zeros"\n', "[validation] gap_policy", "'zeros'", '"zero"'),
        ("[validation]\nmin_month = '0000-01'\n", "[validation] min_month", "'0000-01'", "YYYY-MM"),
    ],
)
def test_a_bad_value_is_refused_naming_key_value_and_valid_range(
    tmp_path: Path, text: str, key: str, value: str, valid: str
) -> None:
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(InvalidParameterError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert f"{key} = {value}" in message
    assert valid in message


def test_every_bad_key_is_named_in_one_message(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('[backtest]\nn_origins = "six"\nn_samples = -5\n[features]\nhorizons = 0\n')
    with pytest.raises(InvalidParameterError) as info:
        load_config(path)
    message = str(info.value)
    for key in ("[backtest] n_origins", "[backtest] n_samples", "[features] horizons"):
        assert key in message


def test_a_section_that_is_not_a_table_is_named(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("backtest = 3\n")
    with pytest.raises(InvalidParameterError, match=r"backtest = 3 must be a table"):
        load_config(path)


def test_building_or_replacing_a_section_by_hand_is_validated_too() -> None:
    from dataclasses import replace

    with pytest.raises(InvalidParameterError, match=r"\[backtest\] n_samples = 0"):
        BacktestConfig(n_samples=0)
    with pytest.raises(InvalidParameterError, match=r"\[backtest\] n_origins = -1"):
        replace(BacktestConfig(), n_origins=-1)
    with pytest.raises(InvalidParameterError, match="unknown key"):
        BacktestConfig(origins=3)  # type: ignore[call-arg]


def test_a_mid_month_toml_date_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("as_of = 2011-11-15\n")
    with pytest.raises(InvalidParameterError, match=r"as_of = datetime\.date\(2011, 11, 15\)"):
        load_config(path)


def test_settings_list_every_field_with_its_default() -> None:
    rows = {r["key"]: r for r in settings()}
    # written by hand from the dataclasses' declared defaults
    assert rows["[backtest] n_origins"]["default"] == "none"
    assert rows["[backtest] quantiles"]["default"] == "[0.5, 0.8, 0.9, 0.95, 0.99]"
    assert rows["[validation] min_month"]["default"] == '"1990-01"'
    assert rows["work_dir"]["default"] == '".poolcast"'
    assert rows["[features] horizons"]["valid"] == "an integer with 1 <= x <= 12"
    assert all(r["description"] for r in rows.values()), "every setting is documented"
    from dataclasses import fields

    from poolcast.config import _SECTIONS

    expected = {f.name for f in fields(PipelineConfig)} - set(_SECTIONS)
    expected |= {f"[{s}] {f.name}" for s, cls in _SECTIONS.items() for f in fields(cls)}
    assert set(rows) == expected


def test_readme_lists_exactly_the_settings_of_the_model() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    start, end = "<!-- settings:start -->\n", "\n<!-- settings:end -->"
    assert start in readme and end in readme, "README lacks the generated settings table"
    block = readme.split(start, 1)[1].split(end, 1)[0]
    assert block.strip() == settings_markdown().strip(), (
        "README's settings table is stale: paste the output of `python -m poolcast.config`"
    )


def test_candidate_params_reach_the_lineup_over_its_own_settings(tmp_path: Path) -> None:
    from poolcast.models import default_candidates

    path = tmp_path / "run.toml"
    path.write_text(
        "[backtest]\n"
        'candidates = ["bayes_nb2_hier", "moving_average", "glmm_nb2_ri"]\n'
        "[backtest.params.bayes_nb2_hier]\n"
        'adaptation = "low_rank"\n'
        "draws = 1000\n"
        "[backtest.params.moving_average]\n"
        "window = 12\n"
        "[backtest.params.glmm_nb2_ri]\n"
        "include_promo = false\n"
    )
    config = load_config(path)
    lineup = default_candidates(
        has_customers=True,
        has_promo=True,
        names=config.backtest.candidates,
        params=config.backtest.params,
    )
    bayes = lineup["bayes_nb2_hier"]()
    assert (bayes.adaptation, bayes.draws, bayes.customer_terms) == ("low_rank", 1000, "log")
    assert lineup["moving_average"]().window == 12
    assert lineup["glmm_nb2_ri"]().include_promo is False  # over the line-up's has_promo
    assert load_config(None).backtest.params == {}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[backtest.params.nope]\nx = 1\n", "unknown candidate 'nope'"),
        ("[backtest.params.bayes_nb2_hier]\ndraw = 5\n", "unknown parameter(s) ['draw']"),
        ('[backtest.params.bayes_nb2_hier]\nadaptation = "dense"\n', "adaptation='dense'"),
        ("[backtest.params.moving_average]\nwindow = 0\n", "window=0"),
    ],
)
def test_bad_candidate_params_are_refused_naming_candidate_and_key(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(InvalidParameterError) as info:
        load_config(path)
    assert fragment in str(info.value)
    assert "[backtest" in str(info.value)
