"""Only transient failures are retried."""

from __future__ import annotations

import pytest

from poolcast.errors import DataContractError, SourceError
from tasks._retry import is_transient


def _wrapped(cause: BaseException) -> SourceError:
    try:
        raise cause
    except BaseException as exc:
        try:
            raise SourceError("cannot read", source="db") from exc
        except SourceError as outer:
            return outer


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionResetError("reset"),
        TimeoutError("slow"),
        OSError("I/O error"),
        _wrapped(ConnectionRefusedError("no")),
    ],
)
def test_transient_errors_are_retried(exc):
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError("missing.csv"),
        PermissionError("denied"),
        SourceError("column 'sales' is absent", source="x.csv", column="sales"),
        DataContractError("bad rows"),
        ValueError("bad value"),
        _wrapped(FileNotFoundError("gone")),
        None,
    ],
)
def test_permanent_errors_are_not_retried(exc):
    assert not is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        FileExistsError("quarantine.csv exists"),
        NotADirectoryError("work is a file"),
        IsADirectoryError("outputs.duckdb is a directory"),
        FileNotFoundError(2, "No such file or directory", "/missing/dir/mlflow.db"),
        PermissionError(13, "Permission denied", "/srv/readonly"),
    ],
)
def test_path_errors_are_permanent(exc):
    assert not is_transient(exc)
    assert not is_transient(_wrapped(exc))
