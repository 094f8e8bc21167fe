"""The one entry point: serve, worker, migrate, simulate, forecast, regulation, resources."""

from __future__ import annotations

import gc
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vpp_aggregator.cli_regulation import regulation_app
from vpp_aggregator.cli_replay import replay
from vpp_aggregator.cli_resources import resources_app
from vpp_aggregator.config import ConfigError, Settings, load_settings, open_bind_problem

app = typer.Typer(
    help="VPP aggregator: V2G EVs and batteries as one dispatchable resource.", no_args_is_help=True
)
console = Console(stderr=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (SQLite file or PostgreSQL from DATABASE_URL)."""
    from vpp_aggregator.adapters.store.database import make_engine
    from vpp_aggregator.adapters.store.database import migrate as run

    settings = _settings()
    revision = run(make_engine(settings.database_url))
    console.print(
        f"database at revision [bold]{revision}[/bold] ({_safe_url(settings.database_url)})"
    )


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command()
def serve(
    demo: Annotated[
        bool, typer.Option(help="Also run a simulated fleet posting telemetry to this service")
    ] = False,
    demo_evs: Annotated[int, typer.Option(help="EVs in the demo fleet")] = 40,
    demo_bess: Annotated[int, typer.Option(help="Batteries in the demo fleet")] = 4,
) -> None:
    """Start the HTTP API on $PORT (default 3003)."""
    import uvicorn

    from vpp_aggregator import bootstrap
    from vpp_aggregator.adapters.api.app import create_app

    settings = _settings()
    _refuse_open_bind(settings)
    try:
        api = create_app(service=bootstrap.build(settings, load=False))
    except Exception as exc:  # a clear line for the operator instead of a traceback wall
        console.print(f"[red]cannot start: {type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"vpp-aggregator on http://{settings.host}:{settings.port}  (docs /docs, metrics /metrics, "
        f"database {_safe_url(settings.database_url)})"
    )
    if demo:
        from vpp_aggregator.demo.follow import run_simulation

        base = f"http://127.0.0.1:{settings.port}"
        threading.Thread(
            target=run_simulation,
            kwargs={"base_url": base, "ev_count": demo_evs, "bess_count": demo_bess},
            daemon=True,
            name="demo-fleet",
        ).start()
        console.print(
            f"demo fleet: {demo_evs} EVs and {demo_bess} batteries posting telemetry every 2 s"
        )
    # Everything loaded so far lives for the whole process: keep the collector from rescanning it.
    gc.collect()
    gc.freeze()
    uvicorn.run(api, host=settings.host, port=settings.port, log_level="warning", access_log=False)


def _refuse_open_bind(settings: Settings) -> None:
    """No open admin API on a reachable address, unless the operator says so out loud."""
    problem = open_bind_problem(settings)
    if problem is not None:
        console.print(f"[red]cannot start: {problem}[/red]")
        raise typer.Exit(2)
    if settings.allow_insecure and not (settings.jwt_secret or settings.jwt_public_key):
        console.print(
            f"[bold red]VPP_ALLOW_INSECURE=1: listening on {settings.host} with NO "
            "authentication; every caller is an admin[/bold red]"
        )


@app.command()
def worker(
    port: Annotated[
        int, typer.Option(help="Port for health, readiness and metrics of this worker")
    ] = 3004,
) -> None:
    """Join the Kafka consumer group: telemetry, grid signals, charger events, physics alerts.

    Run several to share the partitions. Built like `serve` (`bootstrap.build`), as a member
    of the consumer group; it serves the same HTTP API on `--port` (readiness at
    /health/ready, metrics at /metrics)."""
    import uvicorn

    from vpp_aggregator import bootstrap
    from vpp_aggregator.adapters.api.app import create_app

    settings = _settings().model_copy(update={"port": port})  # names its Kafka transactions
    _refuse_open_bind(settings)
    if not settings.kafka_brokers:
        console.print("[red]cannot start a worker: KAFKA_BROKERS is not set[/red]")
        raise typer.Exit(2)
    try:
        api = create_app(service=bootstrap.build(settings, consume=True, load=False))
    except Exception as exc:
        console.print(f"[red]cannot start: {type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"vpp-aggregator worker in group {settings.kafka_group_id!r} on {settings.kafka_brokers}; "
        f"health on http://127.0.0.1:{port}/health/ready"
    )
    uvicorn.run(api, host=settings.host, port=port, log_level="warning", access_log=False)


@app.command()
def simulate(
    url: Annotated[
        str, typer.Option(help="Base URL of a running service")
    ] = "http://127.0.0.1:3003",
    evs: Annotated[int, typer.Option(help="Number of EVs")] = 40,
    bess: Annotated[int, typer.Option(help="Number of batteries")] = 4,
    interval: Annotated[float, typer.Option(help="Seconds between telemetry posts")] = 2.0,
    duration: Annotated[
        float | None, typer.Option(help="Stop after this many seconds (default: run until Ctrl-C)")
    ] = None,
    speed: Annotated[
        float, typer.Option(help="Simulated minutes of driver behaviour per real minute")
    ] = 60.0,
    data_dir: Annotated[
        Path | None, typer.Option(help="Real data folder (default ../shared/data)")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
) -> None:
    """Run a fleet whose plug-ins, batteries and power come from real charging data."""
    from vpp_aggregator.demo.follow import run_simulation

    def tick(accepted: int, rejected: int) -> None:
        console.print(f"posted telemetry: {accepted} accepted, {rejected} rejected")

    try:
        run_simulation(
            base_url=url,
            ev_count=evs,
            bess_count=bess,
            interval_s=interval,
            duration_s=duration,
            speed=speed,
            data_dir=data_dir,
            seed=seed,
            on_tick=tick,
        )
    except KeyboardInterrupt:
        sys.exit(0)


forecast_app = typer.Typer(help="Train and backtest the availability forecaster on session data.")
app.add_typer(forecast_app, name="forecast")
app.add_typer(regulation_app, name="regulation")
app.add_typer(resources_app, name="resources")
app.command("replay")(replay)


@forecast_app.command("backtest")
def forecast_backtest(
    sessions: Annotated[
        Path, typer.Option(help="Sessions CSV (connect_time_utc, disconnect_time_utc, user_id)")
    ],
    weather: Annotated[
        Path | None, typer.Option(help="Hourly weather CSV (hour_utc, temperature, precipitation)")
    ] = None,
    timezone: Annotated[str, typer.Option(help="Site time zone")] = "America/Los_Angeles",
    start: Annotated[str, typer.Option(help="First origin date (UTC, YYYY-MM-DD)")] = "2019-01-07",
    days: Annotated[int, typer.Option(help="Days of daily origins")] = 56,
    horizon_hours: Annotated[int, typer.Option(help="Hours ahead")] = 72,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics here")] = None,
    site: Annotated[str | None, typer.Option(help="Keep one site of a multi-site file")] = None,
    country: Annotated[
        str, typer.Option(help="Public holidays: country code (holidays package)")
    ] = "US",
    subdivision: Annotated[
        str | None, typer.Option(help="Public holidays: subdivision ('' for none)")
    ] = "CA",
) -> None:
    """Rolling origins, one per day; trains only on data before each origin; scores the model,
    seasonal-naive-168 and persistence-24 on the same hours."""
    import json

    from rich.progress import Progress

    from vpp_aggregator.adapters.data.forecasting import BacktestSpec, backtest

    spec = BacktestSpec(
        sessions,
        weather,
        timezone,
        datetime.fromisoformat(start).replace(tzinfo=UTC),
        days,
        horizon_hours,
        site=site,
        country=country,
        subdivision=subdivision or None,
    )
    with Progress(console=console) as bar:
        task = bar.add_task("backtest", total=None)
        result = backtest(
            spec, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    text = json.dumps(result, indent=2)
    if json_out:
        json_out.write_text(text)
    typer.echo(text)


@forecast_app.command("train")
def forecast_train(
    sessions: Annotated[Path, typer.Option(help="Sessions CSV")],
    weather: Annotated[Path | None, typer.Option(help="Hourly weather CSV")] = None,
    timezone: Annotated[str, typer.Option(help="Site time zone")] = "America/Los_Angeles",
    out_dir: Annotated[Path, typer.Option(help="Where versioned models are stored")] = Path(
        "var/models"
    ),
) -> None:
    """Fit P10/P50/P90 models on the whole file (the other levels follow) and store a versioned model."""
    from vpp_aggregator.adapters.data.forecasting import train

    path = train(sessions, weather, timezone, out_dir)
    console.print(f"model stored at [bold]{path}[/bold]")


if __name__ == "__main__":
    app()
