"""Serve the monthly retrain on a schedule from this process (no work pool needed).

    python -m deployments.serve                 # cron "0 6 2 * *" (UTC), bundled example data
    python -m deployments.serve --source s3.csv --mapping rossmann --workers 4

The schedule and default parameters match ``deployments/prefect.yaml``.
"""

from __future__ import annotations

import argparse
import os

from flows.monthly_retrain import monthly_retrain  # first: applies the embedded Prefect defaults

__all__ = ["CRON", "DEFAULT_PARAMETERS", "main"]

CRON = "0 6 2 * *"
DEFAULT_PARAMETERS = {
    "source": "data/example/online_retail_sku_monthly.csv.gz",
    "mapping": "online_retail",
    "as_of": None,
    "config_path": None,
    "work_dir": ".poolcast",
}


def main(argv: list[str] | None = None) -> None:
    """Parse the options and serve the deployment ``monthly-retrain`` until interrupted."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", default=DEFAULT_PARAMETERS["source"])
    parser.add_argument("--mapping", default=DEFAULT_PARAMETERS["mapping"])
    parser.add_argument("--config", dest="config_path", default=None)
    parser.add_argument("--work-dir", default=DEFAULT_PARAMETERS["work_dir"])
    parser.add_argument("--cron", default=CRON)
    parser.add_argument(
        "--workers", type=int, default=int(os.environ.get("POOLCAST_COMPETE_WORKERS", "2"))
    )
    args = parser.parse_args(argv)
    from prefect.task_runners import ThreadPoolTaskRunner

    flow = monthly_retrain.with_options(task_runner=ThreadPoolTaskRunner(max_workers=args.workers))
    parameters = DEFAULT_PARAMETERS | {
        "source": args.source,
        "mapping": args.mapping,
        "config_path": args.config_path,
        "work_dir": args.work_dir,
    }
    flow.serve(name="monthly-retrain", cron=args.cron, parameters=parameters)


if __name__ == "__main__":
    main()
