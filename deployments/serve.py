"""Serve the monthly retrain on its schedule from this process: the code behind ``poolcast serve``.

``poolcast serve`` is the one documented way (``python -m deployments.serve`` forwards to it).
It needs a **running Prefect server**, because Prefect schedules runs only on a real server,
never on the temporary one a plain ``poolcast run`` starts::

    prefect server start                                   # in another terminal (or a service)
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    poolcast serve --source data/example/online_retail_sku_monthly.csv.gz --mapping online_retail

The deployment it creates is ``monthly-retrain/monthly-retrain-serve``: a name distinct from
the ``monthly-retrain`` deployment of ``prefect deploy`` (``deployments/prefect.yaml``), so
serving never overwrites the work-pool deployment. It keeps the same cron, default parameters
and ``concurrency_limit: 1`` (never two retrains at once: they would race for the registry
alias), and runs at most one flow run at a time in this process.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from typing import Any

from poolcast.errors import PoolcastError

__all__ = [
    "CONCURRENCY_LIMIT",
    "CRON",
    "DEFAULT_PARAMETERS",
    "SERVE_DEPLOYMENT_NAME",
    "check_prefect_server",
    "main",
    "serve",
]

CRON = "0 6 2 * *"
CONCURRENCY_LIMIT = 1
#: Distinct from prefect.yaml's ``monthly-retrain`` so the two never overwrite each other.
SERVE_DEPLOYMENT_NAME = "monthly-retrain-serve"
DEFAULT_PARAMETERS: dict[str, Any] = {
    "source": "data/example/online_retail_sku_monthly.csv.gz",
    "mapping": "online_retail",
    "as_of": None,
    "config_path": None,
    "work_dir": ".poolcast",
}

_HOW = (
    "start one with `prefect server start` and set "
    "PREFECT_API_URL=http://127.0.0.1:4200/api (see README, Operations)"
)


def check_prefect_server(timeout: float = 5.0) -> str:
    """The API URL of the running Prefect server; PoolcastError when none is set or answers."""
    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if not url:
        raise PoolcastError(
            f"poolcast serve needs a running Prefect server: PREFECT_API_URL is unset; {_HOW}"
        )
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            if response.status >= 400:
                raise PoolcastError(
                    f"Prefect server {url} answered HTTP {response.status} on /health; {_HOW}"
                )
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PoolcastError(f"Prefect server {url} does not answer ({reason}); {_HOW}") from None
    return url


def serve(
    parameters: dict[str, Any],
    *,
    cron: str = CRON,
    workers: int = 2,
    name: str = SERVE_DEPLOYMENT_NAME,
) -> None:
    """Create (or update) the served deployment `name` and run its flow runs until interrupted."""
    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.monthly_retrain import monthly_retrain

    flow = monthly_retrain.with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers))
    flow.serve(
        name=name,
        cron=cron,
        parameters=DEFAULT_PARAMETERS | parameters,
        global_limit=CONCURRENCY_LIMIT,
        limit=CONCURRENCY_LIMIT,
        description="Monthly SKU demand retrain, served by `poolcast serve`.",
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m deployments.serve [options]``: the same as ``poolcast serve [options]``."""
    from poolcast.cli import app

    print("python -m deployments.serve is `poolcast serve`; running that.", file=sys.stderr)
    app(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
