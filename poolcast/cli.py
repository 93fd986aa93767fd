"""The ``poolcast`` command line: ``run``, ``serve``, ``validate``, ``simulate``, ``leaderboard``,
``dashboard`` and ``plan-template``.

Every command ends a failure with one line on stderr naming what failed, and exit code 1:
errors from poolcast (:class:`~poolcast.errors.PoolcastError`) and other expected failures
(a file that is not a database, a locked database, an OS error) are caught here, at the
boundary only. The traceback is shown only under ``poolcast --debug <command>`` (or
``POOLCAST_DEBUG=1``). A new command gets the same behaviour from the
:func:`one_line_errors` decorator.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.console import Console
from rich.table import Table

from poolcast.errors import PoolcastError

__all__ = ["app", "main", "one_line_errors"]

app = typer.Typer(
    name="poolcast",
    help="Monthly SKU demand forecasts with GLMMs: validate a source, simulate data, run a retrain.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_ERROR = 1

_F = TypeVar("_F", bound=Callable[..., Any])


class _State:
    """Global options of the command line (set by the app callback)."""

    debug: bool = os.environ.get("POOLCAST_DEBUG", "") not in ("", "0")


@app.callback()
def _global_options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Show the full traceback of a failure (also POOLCAST_DEBUG=1)."
        ),
    ] = False,
) -> None:
    """Monthly SKU demand forecasts with GLMMs: validate a source, simulate data, run a retrain."""
    _State.debug = debug or os.environ.get("POOLCAST_DEBUG", "") not in ("", "0")


def _fail(command: str, exc: BaseException) -> typer.Exit:
    """Print one line naming what failed (or re-raise under --debug) and return Exit(1);
    a password in the message is masked."""
    from poolcast.secrets import mask

    if _State.debug:
        raise exc
    typer.echo(f"poolcast {command}: error: {mask(_one_line(exc))}", err=True)
    return typer.Exit(code=EXIT_ERROR)


def _one_line(exc: BaseException) -> str:
    """The first line of an error's message; the type for errors that are not poolcast's."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if isinstance(exc, PoolcastError):
        return text or type(exc).__name__
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return f"{where}{exc.strerror or text or type(exc).__name__}"
    return (
        f"{type(exc).__name__}: {text} (unexpected; rerun with --debug for the traceback)"
        if text
        else f"{type(exc).__name__} (unexpected; rerun with --debug for the traceback)"
    )


def one_line_errors(command: str) -> Callable[[_F], _F]:
    """Decorate a command so that any failure ends in one line on stderr and exit code 1.

    ``typer.Exit`` / usage errors pass through; under ``--debug`` the exception propagates
    with its traceback. Use it on every command::

        @app.command()
        @one_line_errors("dashboard")
        def dashboard(...) -> None: ...
    """

    def decorate(fn: _F) -> _F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort, click.exceptions.ClickException):
                raise
            except KeyboardInterrupt:
                if _State.debug:
                    raise
                typer.echo(f"poolcast {command}: interrupted", err=True)
                raise typer.Exit(code=130) from None
            except Exception as exc:
                raise _fail(command, exc) from None

        return wrapper  # type: ignore[return-value]

    return decorate


class _NoTracebackForExpectedErrors(logging.Filter):
    """Drop the traceback from Prefect's log record of a poolcast error (one line is enough)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, PoolcastError) and not _State.debug:
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_expected_tracebacks() -> None:
    """Prefect logs a failed flow's traceback; keep it for --debug and unexpected errors only."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTracebackForExpectedErrors) for f in logger.filters):
            logger.addFilter(_NoTracebackForExpectedErrors())


def _settings_help() -> str:
    """Every setting of the --config file with its default, from poolcast.config's model."""
    from rich.markup import escape

    from poolcast.config import settings

    lines = ["Settings of the --config TOML file, key = default (valid values):"]
    lines += [escape(f"{row['key']} = {row['default']}  ({row['valid']})") for row in settings()]
    lines.append("README.md (Configuration) says what each one means.")
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@app.command(epilog=_settings_help())
@one_line_errors("run")
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
    plan: Annotated[
        str | None,
        typer.Option(
            "--plan",
            help="Plan (known-future columns such as open/promo days) for the months after "
            "--as-of: CSV/Parquet path or database URL, read through the same mapping.",
        ),
    ] = None,
    backfill: Annotated[
        bool,
        typer.Option(
            "--backfill",
            help="Deliberate backfill: let a run whose --as-of is older than the latest "
            "published one move the registry alias 'champion' (by the usual rule).",
        ),
    ] = False,
) -> None:
    """Run one monthly retrain (load, validate, features, compete, select, publish, track)."""
    try:
        from poolcast.config import load_config

        cfg = load_config(config, source=source, mapping=mapping, as_of=as_of, work_dir=work_dir)
        if not cfg.source:
            raise PoolcastError("no source given: pass --source or set source in the --config file")
        from poolcast import secrets
        from poolcast.io import check_source
        from poolcast.preflight import preflight

        masked_source, full_source = secrets.split(cfg.source)
        if full_source is not None:  # the flow gets the masked URL, the secret the environment
            os.environ[secrets.SOURCE_URL_ENV] = full_source
        check_source(cfg.source)  # a missing file fails now, not after Prefect has started
        preflight(cfg)  # seconds, before Prefect starts: unwritable paths, dead servers
        _quiet_expected_tracebacks()
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
        if plan is not None:
            kwargs["plan"] = plan
        if backfill:
            kwargs["backfill"] = True
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
@one_line_errors("serve")
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
@one_line_errors("leaderboard")
def leaderboard(
    work_dir: Annotated[
        str, typer.Option("--work-dir", help="The run's work dir (holds outputs.duckdb).")
    ] = ".poolcast",
    outputs_db: Annotated[
        str | None,
        typer.Option(
            "--outputs-db",
            help="Outputs DuckDB file or SQLAlchemy URL (default: <work-dir>/outputs.duckdb).",
        ),
    ] = None,
) -> None:
    """Print the leaderboard of the latest as-of's run as a markdown table (opens the outputs
    read-only: a running publish is never blocked)."""
    import duckdb

    from poolcast.publish import read_latest_leaderboard
    from poolcast.reporting import leaderboard_markdown

    db = outputs_db or Path(work_dir) / "outputs.duckdb"
    try:
        _check_duckdb_file(db)
        run, board = read_latest_leaderboard(db)
    except PoolcastError as exc:
        raise _fail("leaderboard", exc) from None
    except duckdb.Error as exc:
        raise _fail("leaderboard", _database_error(db, exc)) from None
    typer.echo(
        f"run {run['run_id']} as of {run['as_of']}: champion {run['champion']}"
        + (f" (registry v{run['registry_version']})" if run.get("registry_version") else "")
        + "\n\n"
        + leaderboard_markdown(board)
    )


def _check_duckdb_file(db: str | Path) -> None:
    """Refuse an existing file that is not a DuckDB database (its header lacks b'DUCK')."""
    path = Path(db)
    if path.is_dir():
        raise PoolcastError(f"{db}: is a directory, not an outputs database file")
    if path.is_file():
        with path.open("rb") as fh:
            header = fh.read(12)
        if header[8:12] != b"DUCK":
            raise PoolcastError(
                f"{db}: is not a DuckDB outputs database; pass the file `poolcast run` wrote "
                f"(--outputs-db or --work-dir)"
            )


def _database_error(db: str | Path, exc: Exception) -> PoolcastError:
    """A DuckDB failure to open the outputs database, in words."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "lock" in text.lower():
        return PoolcastError(
            f"{db}: the outputs database is locked by another process (a run still "
            f"publishing?); retry when it has finished ({text})"
        )
    if "not a valid duckdb" in text.lower() or "invalid" in text.lower():
        return PoolcastError(
            f"{db}: is not a DuckDB outputs database; pass the file `poolcast run` wrote "
            f"(--outputs-db or --work-dir) ({text})"
        )
    return PoolcastError(f"{db}: cannot read the outputs database: {text}")


@app.command()
@one_line_errors("dashboard")
def dashboard(
    work_dir: Annotated[
        str, typer.Option("--work-dir", help="The run's work dir (holds outputs.duckdb).")
    ] = ".poolcast",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8050,
    host: Annotated[
        str, typer.Option(help="Interface to listen on (loopback by default).")
    ] = "127.0.0.1",
    outputs_db: Annotated[
        str | None,
        typer.Option("--outputs-db", help="Outputs database (default: <work-dir>/outputs.duckdb)."),
    ] = None,
) -> None:
    """Serve the read-only ops dashboard over the published outputs (Ctrl-C stops it)."""
    from poolcast.dashboard.data import Outputs, outputs_path

    outputs = Outputs(outputs_db or outputs_path(work_dir))
    problem = outputs.check()
    if problem is not None:
        raise PoolcastError(problem.message)
    from poolcast.dashboard.app import create_app

    typer.echo(f"poolcast dashboard: serving {outputs.path} (read-only) on http://{host}:{port}/")
    create_app(outputs.path).run(host=host, port=port, debug=False)


@app.command()
@one_line_errors("validate")
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
            "as_of_note": result.as_of_note,
            "quarantine_path": str(q_path),
            "gaps_path": str(g_path),
        }
        typer.echo(json.dumps(payload, default=_json_default))
    else:
        _print_counts(result.source, loaded.mapping.name, counts, q_path, g_path)
        typer.echo(result.as_of_note)
    if counts.rows_accepted == 0:
        typer.echo(
            f"poolcast validate: error: {result.source}: every row was quarantined "
            f"(see {q_path}); check the mapping",
            err=True,
        )
        raise typer.Exit(code=EXIT_ERROR)


@app.command("plan-template")
def plan_template(
    source: Annotated[
        str, typer.Argument(help="CSV/Parquet file with the plan columns for every month.")
    ],
    as_of: Annotated[str, typer.Option("--as-of", help="Last month of the sales file (YYYY-MM).")],
    sales_out: Annotated[
        Path, typer.Option("--sales-out", help="Sales file to write (.csv/.parquet).")
    ],
    plan_out: Annotated[
        Path, typer.Option("--plan-out", help="Plan file to write (.csv/.parquet).")
    ],
    mapping: Annotated[str, typer.Option(help="Shipped mapping name or TOML path.")] = "contract",
    months: Annotated[int, typer.Option(help="Months of plan after --as-of.")] = 3,
) -> None:
    """Cut SOURCE at --as-of into a sales file and a plan file for the next --months months.

    For a source that carries the plan columns for every month (Rossmann's monthly file):
    the sales file has the rows up to --as-of, the plan file the SKU, month and plan
    columns of the next months, ready for ``poolcast run --source SALES --plan PLAN``.
    """
    try:
        from poolcast.config import parse_month
        from poolcast.plan import cut_source

        cut = parse_month(as_of, what="--as-of")
        n_sales, n_plan = cut_source(
            source, mapping, as_of=cut, months=months, sales_out=sales_out, plan_out=plan_out
        )
    except PoolcastError as exc:
        raise _fail("plan-template", exc) from None
    typer.echo(f"sales: {sales_out} ({n_sales:,} rows up to {as_of})")
    typer.echo(f"plan: {plan_out} ({n_plan:,} rows for the {months} months after {as_of})")


@app.command()
@one_line_errors("simulate")
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
    table.add_row("as-of", f"{counts.as_of}")
    console.print(table)
    console.print(f"quarantine: {q_path}\ngaps: {g_path}")


def main() -> None:
    """Entry point of the ``poolcast`` script."""
    app()


if __name__ == "__main__":
    main()
