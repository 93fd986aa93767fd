"""Pre-flight: prove every resource a run writes to is usable before anything is fitted.

A retrain spends minutes fitting candidates before it first writes to MLflow or publishes;
a dead tracking server or a read-only directory found then costs the whole run (and, with
retries, many minutes of tracebacks). :func:`preflight` checks, in a second or two:

- the **work dir** (created if absent) accepts a new file;
- the **quarantine file** ``<work_dir>/quarantine.csv`` can be (over)written;
- the **MLflow store**: a ``sqlite:///`` database (its file, or its folder when new) and
  ``file:`` stores are writable; an ``http(s)://`` tracking server answers ``GET /health``
  within `timeout` seconds; the **artifact dir** ``<work_dir>/mlartifacts`` accepts a file;
- the **outputs database**: a DuckDB path is writable (file or folder), a SQLAlchemy URL
  connects within `timeout` seconds.

The first failure raises :class:`~poolcast.errors.PreflightError`, whose one-line message
names the resource and the cause. Secrets in URLs are masked in messages.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from poolcast.errors import PreflightError
from poolcast.secrets import mask, reveal

__all__ = ["DEFAULT_TIMEOUT", "check_tracking_server", "check_writable_dir", "preflight"]

#: Seconds a remote service (tracking server, outputs database) gets to answer.
DEFAULT_TIMEOUT = 5.0


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    if isinstance(exc, urllib.error.URLError):
        detail = str(exc.reason)
    elif isinstance(exc, OSError) and exc.strerror:
        detail = exc.strerror
    return mask(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)


def check_writable_dir(path: str | Path, *, what: str) -> Path:
    """Create `path` if needed and write, then delete, a probe file in it."""
    path = Path(path)
    resource = f"{what} {path}"
    try:
        if path.exists() and not path.is_dir():
            raise PreflightError(resource, "exists and is not a directory")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".poolcast-preflight-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except PreflightError:
        raise
    except OSError as exc:
        raise PreflightError(resource, f"not writable ({_cause(exc)})") from exc
    return path


def check_writable_file(path: str | Path, *, what: str) -> Path:
    """A file that the run will (over)write: its folder writable, the file itself if present."""
    path = Path(path)
    if path.is_dir():
        raise PreflightError(f"{what} {path}", "is a directory, not a file")
    check_writable_dir(path.parent, what=f"folder of the {what}")
    if path.exists() and not os.access(path, os.W_OK):
        raise PreflightError(f"{what} {path}", "not writable (PermissionError: read-only file)")
    return path


def _bounded(fn: Callable[[], Any], timeout: float, resource: str) -> Any:
    """Run `fn` in a daemon thread; PreflightError if it raises or takes over `timeout` s."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # reported below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name="poolcast-preflight")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise PreflightError(resource, f"no answer within {timeout:g} s")
    if "error" in box:
        raise PreflightError(resource, _cause(box["error"])) from box["error"]
    return box.get("value")


def check_tracking_server(uri: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """``GET <uri>/health`` must answer (any HTTP status below 500) within `timeout` seconds."""
    resource = f"MLflow tracking server {mask(uri)}"
    url = uri.rstrip("/") + "/health"

    def get() -> int:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    status = _bounded(get, timeout + 1.0, resource)
    if status >= 500:
        raise PreflightError(resource, f"answered HTTP {status} on /health")


def _check_tracking_store(uri: str, work_dir: Path, timeout: float) -> None:
    if uri.startswith(("http://", "https://")):
        check_tracking_server(uri, timeout=timeout)
    elif uri.startswith("sqlite:///"):
        check_writable_file(Path(uri.removeprefix("sqlite:///")), what="MLflow store")
    elif uri.startswith("file:"):
        from urllib.parse import urlparse

        check_writable_dir(Path(urlparse(uri).path), what="MLflow store")
    elif "://" not in uri:
        check_writable_dir(Path(uri), what="MLflow store")
    # other schemes (databricks, a database URL): MLflow's own client reports them
    check_writable_dir(work_dir / "mlartifacts", what="MLflow artifact dir")


def _check_outputs(outputs: str | Path, timeout: float) -> None:
    text = str(outputs)
    if "://" not in text:
        check_writable_file(Path(text), what="outputs database")
        return
    resource = f"outputs database {mask(text)}"

    def connect() -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(reveal(text))
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()

    _bounded(connect, timeout, resource)


def preflight(config: Any, *, timeout: float = DEFAULT_TIMEOUT) -> list[str]:
    """Check every resource the run writes to; returns what was checked, one line each.

    Parameters
    ----------
    config : PipelineConfig
        The run's configuration (``work_dir``, ``mlflow_tracking_uri``, ``outputs_db``).
    timeout : float
        Seconds a remote service gets to answer.

    Raises
    ------
    PreflightError
        The first unusable resource, named with its cause.
    """
    work_dir = Path(config.work_dir)
    check_writable_dir(work_dir, what="work dir")
    check_writable_file(work_dir / "quarantine.csv", what="quarantine file")
    uri = config.mlflow_tracking_uri
    _check_tracking_store(uri, work_dir, timeout)
    raw_outputs = str(config.tracking.outputs_db or "")  # a URL (Path() would mangle "//")
    outputs = raw_outputs if "://" in raw_outputs else config.outputs_db
    _check_outputs(outputs, timeout)
    return [
        f"work dir {work_dir}",
        f"quarantine file {work_dir / 'quarantine.csv'}",
        f"MLflow store {mask(uri)}",
        f"outputs database {mask(str(outputs))}",
    ]
