"""``goldenflow replay``: a recorded log through the workers' core, and what-if runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from stream.cli_options import env_option, rules_option
from stream.decide.rulebook import load_rulebook
from stream.errors import GoldenflowError
from stream.replay.compare import compare
from stream.replay.html import write_html
from stream.replay.run import ReplayResult, replay, write_outputs


def _count_lines(path: Path) -> int | None:
    """Lines in a plain file (for the progress bar); None for gzip (unknown up front)."""
    if path.suffix == ".gz" or not path.is_file():
        return None
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def _run(
    events: Path, rules_dir: Path, label: str, console: Console, **kwargs: Any
) -> ReplayResult:
    book = load_rulebook(rules_dir)
    total = _count_lines(events)
    with Progress(
        TextColumn(f"[bold]{label}[/]"),
        BarColumn(),
        TextColumn("{task.completed:,} events"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=total)
        result = replay(events, book, on_progress=lambda n: progress.advance(task, n), **kwargs)
    console.print(
        f"{label}: {result.events:,} events in {result.seconds:.2f} s "
        f"({result.events_per_second:,.0f} events/s), rules {result.rules_version}"
    )
    return result


def _summary_table(title: str, summary: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=True)
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("events", f"{summary['events']:,}")
    table.add_row("dead letters", f"{sum(summary['dead_letters'].values()):,}")
    for pattern, n in summary["patterns"].items():
        table.add_row(f"detected {pattern}", f"{n:,}")
    for result, n in summary["decisions"].items():
        table.add_row(f"decisions: {result}", f"{n:,}")
    for pattern, n in summary["commands"].items():
        table.add_row(f"commands {pattern}", f"{n:,}")
    for bucket, units in summary["spend"].items():
        for unit, amount in units.items():
            table.add_row(f"spend {bucket}", f"{amount:,.2f} {unit}")
    return table


def _compare_table(doc: dict[str, Any]) -> Table:
    table = Table(title="rule versions compared (A | B)")
    for name in ("pattern", "rule", "decisions", "emitted", "suppressed", "spend", "conversions"):
        table.add_column(name, justify="left" if name in ("pattern", "rule") else "right")

    def pair(row: dict[str, Any], key: str) -> str:
        a, b = row["a"][key], row["b"][key]
        if key == "spend":
            a = ", ".join(f"{v:g} {u}" for u, v in a.items()) or "0"
            b = ", ".join(f"{v:g} {u}" for u, v in b.items()) or "0"
        text = f"{a} | {b}"
        return f"[bold yellow]{text}[/]" if a != b else text

    for row in doc["rows"]:
        table.add_row(
            row["pattern"],
            row["rule"],
            *(pair(row, k) for k in ("decisions", "emitted", "suppressed", "spend", "conversions")),
        )
    return table


@click.command("replay")
@click.argument("events", type=click.Path(path_type=Path))
@rules_option()
@env_option(
    "--out",
    "GOLDENFLOW_REPLAY_OUT",
    None,
    "write interventions.jsonl, outcomes.jsonl, dead_letters.jsonl, summary.json here",
    dest="out_dir",
    type=click.Path(path_type=Path),
)
@click.option(
    "--compare",
    "compare_dirs",
    nargs=2,
    type=click.Path(path_type=Path),
    default=None,
    help="replay with two rule folders (RULES_A RULES_B) and compare",
)
@env_option(
    "--html",
    "GOLDENFLOW_REPLAY_HTML",
    None,
    "also write a self-contained HTML report with plots",
    dest="html_file",
    type=click.Path(path_type=Path),
)
@env_option(
    "--lateness-ms",
    "GOLDENFLOW_LATENESS_MS",
    30_000,
    "allowed event-time lateness (a log out of order by more is dead-lettered)",
    type=int,
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def replay_command(
    events: Path,
    rules_dir: Path,
    out_dir: Path | None,
    compare_dirs: tuple[Path, Path] | None,
    html_file: Path | None,
    lateness_ms: int,
    as_json: bool,
) -> None:
    """Feed EVENTS (JSON lines, .gz allowed) through the workers' core, offline.

    Deterministic: the same log and rules give byte-identical outputs.
    """
    console = Console(stderr=as_json)
    kwargs: dict[str, Any] = {"lateness_ms": lateness_ms, "collect_stats": html_file is not None}
    try:
        if compare_dirs:
            a_dir, b_dir = compare_dirs
            a = _run(events, a_dir, "A", console, keep_facts=True, **kwargs)
            b = _run(events, b_dir, "B", console, keep_facts=True, **kwargs)
            doc = compare(a, b, load_rulebook(a_dir), load_rulebook(b_dir))
            if out_dir is not None:
                write_outputs(a, out_dir / "a")
                write_outputs(b, out_dir / "b")
                (out_dir / "compare.json").write_bytes(
                    orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
                )
            if html_file is not None:
                write_html(
                    html_file, [("A", a, load_rulebook(a_dir)), ("B", b, load_rulebook(b_dir))], doc
                )
            if as_json:
                click.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
                return
            console.print(_compare_table(doc))
            console.print(
                f"{doc['changed_decisions']:,} decisions changed; directly, by category: "
                + (", ".join(f"{c} {n}" for c, n in doc["changed_by_category"].items()) or "none")
            )
            if doc["knock_on_by_category"]:
                console.print(
                    "knock-on changes (same fact; caps, stacking or budget moved), by category: "
                    + ", ".join(f"{c} {n}" for c, n in doc["knock_on_by_category"].items())
                )
            for entry in doc["sample"][:5]:
                console.print(
                    f"  {entry.get('user_id')} {entry.get('pattern')} {entry.get('category')}: "
                    f"A {entry['a']['verdict']} | B {entry['b']['verdict']}"
                )
            return
        result = _run(events, rules_dir, "replay", console, **kwargs)
        if out_dir is not None:
            files = write_outputs(result, out_dir)
            console.print("wrote " + ", ".join(str(p) for p in files.values()))
        if html_file is not None:
            write_html(html_file, [("replay", result, load_rulebook(rules_dir))], None)
            console.print(f"wrote {html_file}")
        if as_json:
            click.echo(orjson.dumps(result.summary(), option=orjson.OPT_INDENT_2).decode())
        else:
            console.print(_summary_table(f"replay of {events.name}", result.summary()))
    except GoldenflowError as exc:
        raise click.ClickException(str(exc)) from None
