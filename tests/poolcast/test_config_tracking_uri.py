"""``MLFLOW_TRACKING_URI`` in the environment wins over the config file, which wins over the default."""

from __future__ import annotations

from poolcast.config import load_config


def _config(tmp_path, uri: str | None):
    path = tmp_path / "run.toml"
    path.write_text(f'[tracking]\nmlflow_tracking_uri = "{uri}"\n' if uri else "")
    return load_config(path, work_dir=str(tmp_path / "work"))


def test_environment_wins_over_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert _config(tmp_path, "sqlite:////srv/file.db").mlflow_tracking_uri == (
        "http://mlflow.internal:5000"
    )
    assert _config(tmp_path, None).mlflow_tracking_uri == "http://mlflow.internal:5000"


def test_file_wins_over_the_default_without_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert (
        _config(tmp_path, "sqlite:////srv/file.db").mlflow_tracking_uri == "sqlite:////srv/file.db"
    )
    default = _config(tmp_path, None).mlflow_tracking_uri
    assert default == f"sqlite:///{(tmp_path / 'work' / 'mlflow.db').resolve()}"


def test_an_empty_environment_variable_does_not_count(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    assert (
        _config(tmp_path, "sqlite:////srv/file.db").mlflow_tracking_uri == "sqlite:////srv/file.db"
    )
