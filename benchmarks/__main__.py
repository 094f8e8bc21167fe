"""`make bench`: measure the speed and memory targets on loopback and prepend them to
BENCHMARKS.md (run from the repository root: `python -m benchmarks`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(add_completion=False)
console = Console(stderr=True)


@app.command()
def bench(
    output: Annotated[
        Path | None, typer.Option(help="Prepend the results to this Markdown file")
    ] = None,
    sizes: Annotated[
        str, typer.Option(help="Fleet sizes for the capacity benchmark")
    ] = "10000,100000,1000000",
    http_resources: Annotated[
        int, typer.Option(help="Fleet size for the HTTP benchmark")
    ] = 100_000,
    only: Annotated[
        str,
        typer.Option(
            help="Sections: capacity,telemetry,scaleout,http,http-scale,dispatch,forecast,settlement,regulation,onboarding,kafka,reaction,load,restart,replay"
        ),
    ] = "",
) -> None:
    """Measure capacity reads, HTTP latency, telemetry ingest and memory (loopback only)."""
    from benchmarks.suite import SECTIONS, run_all

    chosen = frozenset(x.strip() for x in only.split(",") if x.strip()) or SECTIONS
    if chosen - SECTIONS:
        raise typer.BadParameter(
            f"unknown sections {sorted(chosen - SECTIONS)}", param_hint="--only"
        )
    text = run_all(
        [int(x) for x in sizes.split(",") if x],
        http_resources,
        output,
        log=console.print,
        sections=chosen,
    )
    typer.echo(text)


if __name__ == "__main__":
    app()
