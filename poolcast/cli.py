"""The ``poolcast`` command line: ``run``, ``serve``, ``validate``, ``simulate`` and ``leaderboard``.

Errors from poolcast (:class:`~poolcast.errors.PoolcastError`) are caught here, at the
boundary only, and reported as one line on stderr with a non-zero exit code (1); no
traceback.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from poolcast.errors import PoolcastError

__all__ = ["app", "main"]

app = typer.Typer(
    name="poolcast",
    help="Monthly SKU demand forecasts with GLMMs: validate a source, simulate data, run a retrain.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_ERROR = 1


def _fail(command: str, exc: BaseException) -> typer.Exit:
    from poolcast.secrets import mask

    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    typer.echo(f"poolcast {command}: error: {mask(lines[0])}", err=True)
    return typer.Exit(code=EXIT_ERROR)


def _json_default(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@app.command()
def run(
    source: Annotated[
        str | None, typer.Option(help="CSV/Parquet path or database URL (default: the config's).")
    ] = None,
    mapping: Annotated[str | None, typer.Option(help="Shipped mapping name or TOML path.")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Last month the run may see (YYYY-MM).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file.")] = None,
    work_dir: Annotated[
        str | None, typer.Option("--work-dir", help="Where stores and outputs go.")
    ] = None,
) -> None:
    """Run one monthly retrain (load, validate, features, compete, select, publish, track)."""
    try:
        from poolcast.config import load_config

        cfg = load_config(config, source=source, mapping=mapping, as_of=as_of, work_dir=work_dir)
        if not cfg.source:
            raise PoolcastError("no source given: pass --source or set source in the --config file")
        from poolcast import secrets
        from poolcast.preflight import preflight

        masked_source, full_source = secrets.split(cfg.source)
        if full_source is not None:  # the flow gets the masked URL, the secret the environment
            os.environ[secrets.SOURCE_URL_ENV] = full_source
        preflight(cfg)  # seconds, before Prefect starts: unwritable paths, dead servers
        from tasks._prefect_env import use_work_dir

        use_work_dir(cfg.work_dir)  # Prefect reads its home when first imported
        _terminate_on_sigterm()
        from flows.monthly_retrain import monthly_retrain

        kwargs: dict[str, Any] = {
            "source": masked_source,
            "mapping": cfg.mapping,
            "as_of": cfg.as_of.isoformat() if cfg.as_of else None,
            "config_path": str(config) if config is not None else None,
            "work_dir": str(cfg.work_dir),
        }
        summary = monthly_retrain(**kwargs)
    except PoolcastError as exc:
        raise _fail("run", exc) from None
    except BaseException as exc:
        if not isinstance(exc, Terminated) and type(exc).__name__ != "TerminationSignal":
            raise
        typer.echo(
            "poolcast run: error: terminated by SIGTERM; the flow run is marked crashed and the "
            "MLflow run failed",
            err=True,
        )
        _exit_now()  # do not wait for candidates still fitting in worker threads
    typer.echo(str(summary))


#: Exit code after SIGTERM (128 + 15, as a shell reports a process killed by it).
TERMINATED_EXIT = 143


class Terminated(BaseException):
    """SIGTERM reached ``poolcast run`` (a BaseException, so Prefect records a crash)."""


def _terminate_on_sigterm() -> None:
    """Make SIGTERM end ``poolcast run`` within seconds, cleanly.

    Inside the flow, Prefect's own handler turns SIGTERM into ``TerminationSignal``: the flow
    run is recorded as crashed and its ``on_crashed`` hook marks the MLflow parent run FAILED
    (bounded in time). Outside it (start-up, shutdown) this handler raises
    :class:`Terminated`. Either way ``run`` then stops Prefect's temporary server and exits
    with code 143 at once, without waiting for candidates still fitting in worker threads; a
    second SIGTERM exits immediately.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, _exit_now)
        raise Terminated("terminated by SIGTERM")

    signal.signal(signal.SIGTERM, handler)


def _exit_now(signum: int | None = None, frame: Any = None) -> None:
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    _stop_prefect_servers()
    os._exit(TERMINATED_EXIT)


def _stop_prefect_servers() -> None:
    """Stop Prefect's temporary (ephemeral) API server subprocesses, if any were started."""
    import sys

    server = sys.modules.get("prefect.server.api.server")
    if server is None:
        return
    for instance in list(getattr(server.SubprocessASGIServer, "_instances", {}).values()):
        try:
            instance.stop()
        except Exception:
            pass


@app.command()
def serve(
    source: Annotated[
        str | None, typer.Option(help="CSV/Parquet path or database URL (default: the config's).")
    ] = None,
    mapping: Annotated[str | None, typer.Option(help="Shipped mapping name or TOML path.")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML config file.")] = None,
    work_dir: Annotated[
        str | None, typer.Option("--work-dir", help="Where stores and outputs go.")
    ] = None,
    cron: Annotated[str, typer.Option(help="Schedule (UTC cron).")] = "0 6 2 * *",
    workers: Annotated[int, typer.Option(help="Candidates fitted at once.")] = 2,
) -> None:
    """Serve the monthly retrain on its schedule (needs a running Prefect server, PREFECT_API_URL).

    Deployment ``monthly-retrain/monthly-retrain-serve`` (never the ``prefect deploy`` one),
    concurrency limit 1. Stop with Ctrl-C.
    """
    try:
        from deployments.serve import DEFAULT_PARAMETERS, check_prefect_server
        from deployments.serve import serve as serve_deployment
        from poolcast import secrets
        from poolcast.config import load_config

        cfg = load_config(config, source=source, mapping=mapping, work_dir=work_dir)
        masked_source, full_source = secrets.split(cfg.source or DEFAULT_PARAMETERS["source"])
        if full_source is not None:  # flow runs inherit this process's environment
            os.environ[secrets.SOURCE_URL_ENV] = full_source
        check_prefect_server()
        from tasks._prefect_env import use_work_dir

        use_work_dir(cfg.work_dir)
        parameters = {
            "source": masked_source,
            "mapping": cfg.mapping if (mapping or config) else DEFAULT_PARAMETERS["mapping"],
            "config_path": str(Path(config).resolve()) if config is not None else None,
            "work_dir": str(Path(cfg.work_dir).resolve()),
        }
        serve_deployment(parameters, cron=cron, workers=workers)
    except PoolcastError as exc:
        raise _fail("serve", exc) from None


@app.command()
def leaderboard(
    work_dir: Annotated[
        str, typer.Option("--work-dir", help="The run's work dir (holds outputs.duckdb).")
    ] = ".poolcast",
    outputs_db: Annotated[
        str | None,
        typer.Option("--outputs-db", help="Outputs database (default: <work-dir>/outputs.duckdb)."),
    ] = None,
) -> None:
    """Print the latest published run's leaderboard as a markdown table."""
    from poolcast.publish import read_latest_leaderboard
    from poolcast.reporting import leaderboard_markdown

    try:
        run, board = read_latest_leaderboard(outputs_db or Path(work_dir) / "outputs.duckdb")
    except PoolcastError as exc:
        raise _fail("leaderboard", exc) from None
    typer.echo(
        f"run {run['run_id']} as of {run['as_of']}: champion {run['champion']}\n\n"
        + leaderboard_markdown(board)
    )


@app.command()
def validate(
    source: Annotated[
        str, typer.Argument(help="CSV/Parquet path or database URL (sqlite:///x.db#table).")
    ],
    mapping: Annotated[
        str | None, typer.Option(help="Shipped mapping name or TOML path (default: contract).")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="Quarantine rows after this month (YYYY-MM).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML config file ([validation] caps, gap_policy).")
    ] = None,
    work_dir: Annotated[
        str | None, typer.Option("--work-dir", help="Where the quarantine file is written.")
    ] = None,
    gap_policy: Annotated[
        str | None, typer.Option("--gap-policy", help="Override: missing or zero.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Load and validate SOURCE; print the counts; write the quarantine (and gaps) under --work-dir.

    Exit 0 when the source is usable (bad rows are quarantined, not fatal); 1 with a
    one-line message when it is not, or when no row at all was accepted.
    """
    try:
        from poolcast.config import load_config
        from poolcast.errors import InvalidParameterError
        from poolcast.io import load_source
        from poolcast.progress import Steps
        from poolcast.validation import validate_panel, write_quarantine

        cfg = load_config(config, mapping=mapping, as_of=as_of, work_dir=work_dir)
        if gap_policy is not None:
            if gap_policy not in ("missing", "zero"):
                raise InvalidParameterError(f"--gap-policy {gap_policy!r}: use 'missing' or 'zero'")
            cfg = replace(cfg, validation=replace(cfg.validation, gap_policy=gap_policy))
        steps = Steps(enabled=not as_json)
        with steps.step(f"loading {source}"):
            loaded = load_source(source, cfg.mapping)
        with steps.step(f"validating {loaded.n_rows:,} rows"):
            result = validate_panel(loaded, config=cfg.validation, as_of=cfg.as_of)
        stem = _stem(source)
        out_dir = cfg.work_dir / "quality"
        q_path = write_quarantine(result, out_dir / f"{stem}.quarantine.csv")
        g_path = out_dir / f"{stem}.gaps.csv"
        result.gaps.write_csv(g_path)
    except PoolcastError as exc:
        raise _fail("validate", exc) from None

    counts = result.counts
    if as_json:
        payload = {
            "source": result.source,
            "mapping": loaded.mapping.name,
            **counts.to_dict(),
            "has_customers": result.has_customers,
            "quarantine_path": str(q_path),
            "gaps_path": str(g_path),
        }
        typer.echo(json.dumps(payload, default=_json_default))
    else:
        _print_counts(result.source, loaded.mapping.name, counts, q_path, g_path)
    if counts.rows_accepted == 0:
        typer.echo(
            f"poolcast validate: error: {result.source}: every row was quarantined "
            f"(see {q_path}); check the mapping",
            err=True,
        )
        raise typer.Exit(code=EXIT_ERROR)


@app.command()
def simulate(
    out: Annotated[
        Path, typer.Option(help="Output panel, .csv or .parquet; truth goes to <stem>.truth.json.")
    ],
    skus: Annotated[int, typer.Option(help="Number of SKUs.")] = 200,
    months: Annotated[int, typer.Option(help="Number of months.")] = 36,
    family: Annotated[str, typer.Option(help="poisson or negbin (NB2).")] = "poisson",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    categories: Annotated[int, typer.Option(help="Number of categories.")] = 8,
    start: Annotated[str, typer.Option(help="First month, YYYY-MM.")] = "2020-01",
    quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
) -> None:
    """Write a synthetic panel with known GLMM truth (correlated SKU intercepts and promo slopes)."""
    try:
        from poolcast.config import parse_month
        from poolcast.progress import Steps
        from poolcast.simulate import simulate_panel, write_simulation

        steps = Steps(enabled=not quiet)
        first = parse_month(start, what="--start")
        with steps.step(f"simulating {skus:,} SKUs x {months} months ({family})"):
            panel = simulate_panel(
                skus,
                months,
                family=family,
                seed=seed,
                n_categories=categories,
                start=first,  # type: ignore[arg-type]
            )
        with steps.step(f"writing {out}"):
            panel_path, truth_path = write_simulation(panel, out)
    except PoolcastError as exc:
        raise _fail("simulate", exc) from None
    typer.echo(f"panel: {panel_path} ({panel.frame.height:,} rows)")
    typer.echo(f"truth: {truth_path}")


def _stem(source: str) -> str:
    """A file-name-safe stem for a source: the file name without suffixes, or the table."""
    if "://" in source:
        name = source.rsplit("#", 1)[1] if "#" in source else "sql"
    else:
        name = Path(source).name.split(".")[0] or "source"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _print_counts(source: str, mapping: str, counts: Any, q_path: Path, g_path: Path) -> None:
    console = Console()
    table = Table(title=f"{source} (mapping {mapping})", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("rows in", f"{counts.rows_in:,}")
    table.add_row("rows accepted", f"{counts.rows_accepted:,}")
    table.add_row("rows quarantined", f"{counts.rows_quarantined:,}")
    for rule, n in counts.by_rule.items():
        table.add_row(f"  {rule}", f"{n:,}")
    table.add_row("duplicates collapsed", f"{counts.duplicates_collapsed:,}")
    table.add_row(f"gaps ({counts.gap_policy})", f"{counts.gaps:,}")
    table.add_row("SKUs", f"{counts.skus:,}")
    table.add_row("months", f"{counts.months} ({counts.first_month} .. {counts.last_month})")
    console.print(table)
    console.print(f"quarantine: {q_path}\ngaps: {g_path}")


def main() -> None:
    """Entry point of the ``poolcast`` script."""
    app()


if __name__ == "__main__":
    main()
