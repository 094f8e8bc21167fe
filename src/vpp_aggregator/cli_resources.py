"""`vpp-aggregator resources import fleet.csv`: a fleet brought as a file, registered through a
running service's `POST /resources/register` in lists of up to 10,000, never all-or-nothing."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

resources_app = typer.Typer(help="The resource registry: bring a fleet as a file.")
console = Console(stderr=True)

NUMBERS = {
    "battery_capacity_kwh",
    "max_charge_kw",
    "max_discharge_kw",
    "min_soc_pct",
    "max_soc_pct",
}
FLAGS = {"v2g_capable", "telemetry_enabled"}
NESTED = {"interconnection", "departure_schedule", "trips"}  # JSON in their cell
TRUE, FALSE = {"true", "yes", "1", "y"}, {"false", "no", "0", "n"}


def _cell(field: str, text: str) -> Any:
    """A CSV cell as the registration field wants it; left as text when it cannot be read, so
    the service names the field at fault for that row."""
    if field in NUMBERS:
        try:
            return float(text)
        except ValueError:
            return text
    if field in FLAGS and text.strip().lower() in TRUE | FALSE:
        return text.strip().lower() in TRUE
    if field in NESTED:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def read_fleet(path: Path) -> list[dict[str, Any]]:
    """One registration per row; empty cells are left out (the field's default applies)."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        return [
            {k: _cell(k, v) for k, v in row.items() if k and v is not None and v.strip() != ""}
            for row in csv.DictReader(f)
        ]


@resources_app.command("import")
def import_fleet(
    fleet: Annotated[Path, typer.Argument(help="CSV: a column per registration field")],
    url: Annotated[str, typer.Option(help="Base URL of the running service")] = (
        "http://127.0.0.1:3003"
    ),
    token: Annotated[
        str | None, typer.Option(help="Bearer token (default: $VPP_TOKEN)", show_default=False)
    ] = None,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Resources per request")] = 10_000,
) -> None:
    """Register every row that passes; print how many were registered and, for each refused
    row, its index (0 is the first data row), id and every reason, as JSON."""
    import httpx

    rows = read_fleet(fleet)
    bearer = token or os.environ.get("VPP_TOKEN")
    headers = {"authorization": f"Bearer {bearer}"} if bearer else {}
    registered, rejected = 0, []
    with httpx.Client(base_url=url, headers=headers, timeout=120.0) as client:
        for start in range(0, len(rows), batch):
            part = rows[start : start + batch]
            answer = client.post("/resources/register", json=part)
            if answer.status_code != 200:
                console.print(f"[red]{answer.status_code}: {answer.text[:500]}[/red]")
                raise typer.Exit(1)
            doc = answer.json()
            registered += int(doc["registered"])
            rejected += [{**r, "index": r["index"] + start} for r in doc["rejected"]]
    typer.echo(json.dumps({"registered": registered, "rejected": rejected}, indent=2))
    console.print(f"{registered:,} registered, {len(rejected):,} refused, of {len(rows):,} rows")
    if rejected and not registered:
        raise typer.Exit(1)
