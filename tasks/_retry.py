"""Retry only transient failures (network, locks, timeouts), never bad data or bad fits."""

from __future__ import annotations

from typing import Any

__all__ = ["is_transient", "retry_if_transient"]

#: A path that is missing, forbidden, already there or of the wrong kind stays so on a retry.
_PERMANENT_OS_ERRORS = (
    FileExistsError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def is_transient(exc: BaseException | None) -> bool:
    """True for connection errors, timeouts and I/O errors other than a missing/forbidden path,
    looking through the ``__cause__`` chain (poolcast wraps driver errors in SourceError)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ConnectionError | TimeoutError):
            return True
        if isinstance(exc, OSError) and not isinstance(exc, _PERMANENT_OS_ERRORS):
            return True
        if type(exc).__name__ in {"OperationalError", "IOException", "MlflowException"} and (
            "lock" in str(exc).lower()
            or "timeout" in str(exc).lower()
            or "connection" in str(exc).lower()
        ):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the failure is transient."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)
