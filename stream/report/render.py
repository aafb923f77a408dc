"""Show a report: rich tables for people, a stable JSON document for programs.

The JSON document (``report_document``) always has the same keys; a value that
cannot be computed is ``null``, never a missing key. Numbers are rounded to six
decimals. Its ``version`` changes only when a key changes meaning or goes away.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stream.domain.timeutil import format_ts
from stream.report.uplift import Arm, Group, Report

DOCUMENT_VERSION = 1
INTERVAL_METHOD = "newcombe-hybrid-score"


# -- JSON --------------------------------------------------------------------------------


def report_document(report: Report) -> dict[str, Any]:
    """The report as plain JSON-ready data (see the module docstring)."""
    out = report.outcomes
    return {
        "version": DOCUMENT_VERSION,
        "source": {
            "name": out.source,
            "records": out.records,
            "decisions": len(out.decisions),
            "attributions": len(out.attributions),
            "duplicates": out.duplicates,
            "skipped": dict(sorted(out.skipped.items())),
            "skipped_examples": list(out.examples),
            "unmatched_attributions": report.unmatched_attributions,
            "first_at": format_ts(report.first_at_ms) if report.first_at_ms is not None else None,
            "last_at": format_ts(report.last_at_ms) if report.last_at_ms is not None else None,
        },
        "by": report.by,
        "patterns": list(report.patterns),
        "confidence": report.confidence,
        "interval": INTERVAL_METHOD,
        "groups": [_group_document(g) for g in report.groups],
    }


def _group_document(g: Group) -> dict[str, Any]:
    uplift = g.uplift
    return {
        "level": g.level,
        "pattern": g.pattern,
        "rule": g.rule,
        "decisions": g.decisions,
        "emitted": g.emitted,
        "deferred": g.deferred,
        "suppressed": dict(sorted(g.suppressed.items())),
        "no_rule": g.no_rule,
        "spend": {unit: _round(v) for unit, v in sorted(g.spend.items())},
        "treatment": _arm_document(g.treatment),
        "control": _arm_document(g.control),
        "uplift": None
        if uplift is None
        else {
            "estimate": _round(uplift.estimate),
            "low": _round(uplift.low),
            "high": _round(uplift.high),
        },
        "incremental_orders": _round(g.incremental_orders),
        "incremental_gmv": _round(g.incremental_gmv),
        "cost_per_incremental_order": {
            unit: _round(v) for unit, v in g.cost_per_incremental_order.items()
        },
    }


def _arm_document(arm: Arm) -> dict[str, Any]:
    return {
        "n": arm.n,
        "conversions": arm.conversions,
        "lost": arm.lost,
        "open": arm.open,
        "rate": _round(arm.rate),
        "gmv": _round(arm.gmv),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6) + 0.0  # + 0.0: no -0.0


# -- text --------------------------------------------------------------------------------


def print_text(report: Report, console: Console | None = None) -> None:
    """Print the report as two tables (decisions, uplift) and notes on what was read."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or captured: do not squeeze into 80 columns
            console = Console(width=160)
    console.print(_summary(report))
    console.print(_decisions_table(report))
    console.print(_uplift_table(report))
    for note in _notes(report):
        console.print(note)


def _summary(report: Report) -> str:
    out = report.outcomes
    text = (
        f"[bold]{escape(out.source)}[/]: {out.records:,} records, "
        f"{len(out.decisions):,} decisions, {len(out.attributions):,} attributions"
    )
    if report.first_at_ms is not None and report.last_at_ms is not None:
        text += f", decided {format_ts(report.first_at_ms)} to {format_ts(report.last_at_ms)}"
    if report.patterns:
        text += f"; pattern {', '.join(escape(p) for p in report.patterns)} only"
    return text


def _label(g: Group) -> tuple[str, str]:
    if g.level == "all":
        return "[bold]all[/]", ""
    pattern = escape(g.pattern or "")
    if g.level == "pattern":
        return f"[bold]{pattern}[/]", "[bold]all rules[/]"
    return pattern, escape(g.rule) if g.rule else "[dim](no rule)[/]"


def _new_table(title: str, report: Report) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    table.add_column("Pattern")
    if report.by == "rule":
        table.add_column("Rule")
    return table


def _add_row(table: Table, report: Report, g: Group, cells: list[str]) -> None:
    pattern, rule = _label(g)
    labels = [pattern, rule] if report.by == "rule" else [pattern]
    # a line under each pattern's total (and before "all") keeps the groups apart
    table.add_row(*labels, *cells, end_section=g.level == "pattern")


def _decisions_table(report: Report) -> Table:
    table = _new_table("Decisions", report)
    for name in ("Decisions", "Emitted", "Deferred", "No rule"):
        table.add_column(name, justify="right")
    table.add_column("Suppressed (by reason)")
    table.add_column("Spend (treatment)", justify="right")
    for g in report.groups:
        suppressed = ", ".join(f"{escape(r)} {n:,}" for r, n in sorted(g.suppressed.items()))
        spend = ", ".join(f"{escape(u)} {v:,.2f}" for u, v in sorted(g.spend.items()))
        _add_row(
            table,
            report,
            g,
            [
                f"{g.decisions:,}",
                f"{g.emitted:,}",
                f"{g.deferred:,}",
                f"{g.no_rule:,}",
                suppressed or "-",
                spend or "-",
            ],
        )
    return table


def _uplift_table(report: Report) -> Table:
    level = round(report.confidence * 100)
    table = _new_table(f"Uplift (treatment - control, {level}% interval)", report)
    table.add_column("Treatment\nconv/n (open)", justify="right")
    table.add_column("Rate", justify="right")
    table.add_column("Control\nconv/n (open)", justify="right")
    table.add_column("Rate", justify="right")
    table.add_column(f"Uplift [{level}% CI]", justify="right")
    table.add_column("Incr.\norders", justify="right")
    table.add_column("Incr.\nGMV", justify="right")
    table.add_column("Cost per\nincr. order", justify="right")
    for g in report.groups:
        uplift = g.uplift
        interval = (
            "-"
            if uplift is None
            else f"{_pp(uplift.estimate)} [{_pp(uplift.low)}, {_pp(uplift.high)}]"
        )
        cost = ", ".join(
            f"{escape(u)} {v:,.2f}" if v is not None else f"{escape(u)} -"
            for u, v in g.cost_per_incremental_order.items()
        )
        _add_row(
            table,
            report,
            g,
            [
                _arm_cell(g.treatment),
                _rate(g.treatment.rate),
                _arm_cell(g.control),
                _rate(g.control.rate),
                interval,
                _number(g.incremental_orders, 1),
                _number(g.incremental_gmv, 2),
                cost or "-",
            ],
        )
    return table


def _arm_cell(arm: Arm) -> str:
    if not arm.n:
        return "-"
    return f"{arm.conversions:,}/{arm.n:,}" + (f" ({arm.open:,})" if arm.open else "")


def _rate(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1%}"


def _pp(value: float) -> str:
    """A difference of rates in percentage points."""
    return f"{value * 100:+.1f}pp"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _notes(report: Report) -> list[str]:
    out = report.outcomes
    total = report.total
    notes: list[str] = []
    opened = total.treatment.open + total.control.open
    if opened:
        notes.append(
            f"{opened:,} decision(s) still open (attribution window not closed yet): "
            "counted in their arm as not converted, shown as (open)."
        )
    if total.decisions and not total.control.n:
        notes.append(
            "No control decisions: uplift needs a holdout (suppressed with reason holdout)."
        )
    if out.duplicates:
        notes.append(f"{out.duplicates:,} duplicate record(s) ignored (same kind and id).")
    if report.unmatched_attributions:
        notes.append(
            f"{report.unmatched_attributions:,} attribution(s) without a treatment or control "
            "decision in the source ignored."
        )
    if out.skipped:
        counts = ", ".join(f"{code} {n:,}" for code, n in sorted(out.skipped.items()))
        notes.append(f"[yellow]{out.skipped_total:,} record(s) skipped[/]: {counts}")
        notes.extend(f"  {escape(example)}" for example in out.examples)
    notes.append(
        "[dim]Uplift: conversion rate difference in percentage points, Newcombe hybrid score "
        "interval; '-': no control arm, or no positive lift for a cost per order.[/]"
    )
    return notes
