"""The benchmark's result as tables on the terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

UNITS = (
    ("_events_per_s", "ev/s"),
    ("_ms", "ms"),
    ("_s", "s"),
    ("_bytes", "bytes"),
)


def unit_of(key: str) -> str:
    if key.startswith("ratio_"):
        return "x"
    if key.startswith("decisions_"):
        return "decisions/s"
    for suffix, unit in UNITS:
        if key.endswith(suffix):
            return unit
    return ""


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:,.1f}"
    return f"{value:,.3g}"


def print_result(doc: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console()
    m = doc["machine"]
    p = doc["params"]
    ram = m.get("ram_bytes", 0) / 2**30
    console.print(
        f"[bold]goldenflow bench[/bold]: {p['events']:,} events "
        f"(~{p.get('event_bytes_mean', 0):.0f} B), {p['shoppers']:,} shoppers, "
        f"{p['partitions']} partitions, {p['broker']} broker; "
        f"{m.get('cores')} cores, {ram:.0f} GiB, Python {m.get('python')}; "
        f"load average at start {m.get('load_average_at_start')}"
    )
    figures = Table(title="figures")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    figures.add_column("unit")
    for key, value in doc["figures"].items():
        figures.add_row(key, number(value), unit_of(key))
    for name, peer in doc.get("peers", {}).items():
        if peer.get("status") != "measured":
            figures.add_row(f"{name}_count_events_per_s", peer["status"], "")
    console.print(figures)
    targets = Table(title="targets")
    targets.add_column("target")
    targets.add_column("value", justify="right")
    targets.add_column("")
    for t in doc.get("targets", []):
        value = "-" if t["value"] is None else number(t["value"])
        verdict = {True: "[green]met[/green]", False: "[red]missed[/red]", None: "not measured"}
        targets.add_row(t["target"], value, verdict[t["met"]])
    console.print(targets)
    for section, error in doc.get("errors", {}).items():
        console.print(f"[red]{section} failed[/red]: {error}")
    console.print(f"took {doc.get('seconds', 0):.0f} s")
