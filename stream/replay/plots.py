"""Inline SVG plots for the replay's HTML report: plain strings, no dependencies.

Every string that comes from data goes through :func:`esc`; every number is formatted
with fixed precision, so the same data always gives the same bytes. Each plot is an
``<svg>`` with a ``data-plot`` attribute naming it and ``class="bar"`` on its bars
(the end-to-end test counts them in a browser).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from stream.domain.timeutil import DAY, HOUR, MINUTE

#: Okabe-Ito: distinguishable with the common colour-vision deficiencies
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000")
#: one colour and dash per run (A, B) for the configured-dwell lines
RUN_STYLES = (("#D55E00", ""), ("#0072B2", "5 3"), ("#009E73", "2 2"), ("#CC79A7", "8 3"))


def esc(value: object) -> str:
    """Text or attribute value, escaped for HTML and inline SVG."""
    return html.escape(str(value), quote=True)


def num(x: float) -> str:
    """A coordinate: one decimal, no "-0.0"."""
    text = f"{x:.1f}"
    return "0.0" if text == "-0.0" else text


def short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration(minutes: float) -> str:
    """30s, 10m, 1h30m, 2d..."""
    seconds = round(minutes * 60)
    if seconds < 60:
        return f"{seconds}s"
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts[:2])


def _svg(plot: str, width: int, height: int, label: str, body: list[str], **data: str) -> str:
    attrs = "".join(f' data-{k}="{esc(v)}"' for k, v in sorted(data.items()))
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}" '
        f'data-plot="{esc(plot)}"{attrs}>' + "".join(body) + "</svg>"
    )


def _text(x: float, y: float, text: str, cls: str = "", anchor: str = "start") -> str:
    klass = f' class="{cls}"' if cls else ""
    return f'<text x="{num(x)}" y="{num(y)}" text-anchor="{anchor}"{klass}>{esc(text)}</text>'


def _rect(
    x: float, y: float, w: float, h: float, fill: str, title: str, cls: str = "bar", **data: str
) -> str:
    attrs = "".join(f' data-{k}="{esc(v)}"' for k, v in sorted(data.items()))
    return (
        f'<rect class="{cls}" x="{num(x)}" y="{num(y)}" width="{num(max(w, 0.0))}" '
        f'height="{num(max(h, 0.0))}" fill="{fill}"{attrs}><title>{esc(title)}</title></rect>'
    )


def _line(x1: float, y1: float, x2: float, y2: float, cls: str, extra: str = "") -> str:
    return (
        f'<line class="{cls}" x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}"{extra}/>'
    )


# -- funnel --------------------------------------------------------------------------------


def funnel_svg(steps: Sequence[tuple[str, int]], run: str) -> str:
    """Horizontal bars: shoppers reaching each step; the drop from the previous step is
    drawn faded behind, and the label gives the count and the % of the previous step."""
    left, bar_w, row = 120, 380, 30
    width, height = left + bar_w + 260, 16 + row * len(steps)
    top = max((n for _, n in steps), default=0) or 1
    body: list[str] = []
    previous: int | None = None
    prev_name = ""
    for i, (step, n) in enumerate(steps):
        y = 8 + i * row
        w = n / top * bar_w
        body.append(_text(left - 8, y + 18, step, anchor="end"))
        if previous is not None and previous > n:
            body.append(
                _rect(
                    left + w,
                    y + 4,
                    (previous - n) / top * bar_w,
                    row - 8,
                    "#f3c9b8",
                    f"{step}: {previous - n:,} dropped after {prev_name}",
                    cls="drop",
                )
            )
        body.append(
            _rect(
                left, y + 4, w, row - 8, PALETTE[0], f"{step}: {n:,} shoppers", step=step, n=str(n)
            )
        )
        if previous is None:
            note = f"{n:,}"
        elif previous:
            note = f"{n:,} · {n / previous:.1%} of {prev_name}"
        else:
            note = f"{n:,} · — of {prev_name}"
        body.append(_text(left + bar_w + 8, y + 18, note, "value"))
        previous, prev_name = n, step
    return _svg("funnel", width, height, "funnel: shoppers reaching each step", body, run=run)


# -- dwell histograms ----------------------------------------------------------------------

#: log10(minutes) range of the histograms (6 seconds .. about 22 days), quarter-decade bins
LOG_LO, LOG_HI, LOG_STEP = -1.0, 4.5, 0.25
BINS = round((LOG_HI - LOG_LO) / LOG_STEP)
TICKS = ((1, "1m"), (10, "10m"), (60, "1h"), (360, "6h"), (1440, "1d"), (10080, "7d"))


def dwell_bins(minutes: Sequence[float]) -> list[int]:
    """Counts per quarter-decade bin; below the range into the first, above into the last."""
    counts = [0] * BINS
    for m in minutes:
        pos = (math.log10(m) - LOG_LO) / LOG_STEP if m > 0 else 0.0
        counts[min(BINS - 1, max(0, math.floor(pos)))] += 1
    return counts


@dataclass(frozen=True)
class DwellLine:
    run: str
    minutes: float


def dwell_svg(
    category: str, minutes: Sequence[float], lines: Sequence[DwellLine], still_in_cart: int
) -> str:
    """One small multiple: minutes in the cart before leaving it (log scale) and the
    configured dwell of each run as a vertical line."""
    width, height = 288, 178
    left, right, top, bottom = 34, 10, 40, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    counts = dwell_bins(minutes)
    peak = max(counts) or 1

    def x_of(m: float) -> float:
        pos = (math.log10(m) - LOG_LO) / (LOG_HI - LOG_LO) if m > 0 else 0.0
        return left + min(1.0, max(0.0, pos)) * plot_w

    body = [
        f"<title>{esc(category)}</title>",
        _text(4, 14, short(category, 30), "title"),
        _text(4, 28, f"n={len(minutes):,} left the cart · {still_in_cart:,} still in it", "note"),
        _line(left, top + plot_h, left + plot_w, top + plot_h, "axis"),
        _line(left, top, left, top + plot_h, "axis"),
        _text(left - 4, top + 8, f"{peak:,}", "tick", "end"),
        _text(left - 4, top + plot_h, "0", "tick", "end"),
    ]
    bin_w = plot_w / BINS
    for i, n in enumerate(counts):
        if not n:
            continue
        lo, hi = 10 ** (LOG_LO + i * LOG_STEP), 10 ** (LOG_LO + (i + 1) * LOG_STEP)
        h = n / peak * plot_h
        span = f"{duration(lo)} to {duration(hi)}"
        if i == 0:
            span = f"under {duration(hi)}"
        elif i == BINS - 1:
            span = f"over {duration(lo)}"
        body.append(
            _rect(
                left + i * bin_w + 0.5,
                top + plot_h - h,
                bin_w - 1,
                h,
                PALETTE[4],
                f"{span}: {n:,}",
                n=str(n),
            )
        )
    for m, label in TICKS:
        x = x_of(m)
        body.append(_line(x, top + plot_h, x, top + plot_h + 4, "axis"))
        body.append(_text(x, top + plot_h + 15, label, "tick", "middle"))
    labels: dict[float, list[tuple[str, str]]] = {}  # one label per distinct dwell
    for i, line in enumerate(lines):
        color, dash = RUN_STYLES[i % len(RUN_STYLES)]
        x = x_of(line.minutes)
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        extra = f' stroke="{color}"{dashes} data-run="{esc(line.run)}"'
        body.append(_line(x, top - 2, x, top + plot_h, "dwell", extra))
        labels.setdefault(line.minutes, []).append((line.run, color))
    for i, (minutes_at, runs) in enumerate(labels.items()):
        x = x_of(minutes_at)
        if len(lines) == 1:
            label = duration(minutes_at)
        else:
            label = f"{', '.join(run for run, _ in runs)}: {duration(minutes_at)}"
        anchor = "end" if x > left + plot_w * 0.7 else "start"
        dx = -3 if anchor == "end" else 3
        color = runs[0][1] if len(runs) == 1 else "#222"
        body.append(
            f'<text x="{num(x + dx)}" y="{num(top + 8 + 11 * i)}" text-anchor="{anchor}" '
            f'class="dwell-label" fill="{color}">{esc(label)}</text>'
        )
    if len(labels) > 1:
        body.append(_text(width - 6, 14, "dwell differs", "changed", "end"))
    return _svg("dwell", width, height, f"cart dwell of {category}", body, category=category)


# -- interventions over time ---------------------------------------------------------------

BUCKETS = (
    MINUTE,
    5 * MINUTE,
    15 * MINUTE,
    HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    7 * DAY,
)
MAX_BUCKETS = 60


def time_buckets(first_ms: int, last_ms: int) -> tuple[int, int, int]:
    """(start, bucket size, bucket count): at most MAX_BUCKETS aligned buckets (UTC)."""
    for size in BUCKETS:
        start = first_ms // size * size
        count = (last_ms - start) // size + 1
        if count <= MAX_BUCKETS:
            return start, size, count
    size = math.ceil((last_ms - first_ms + 1) / (MAX_BUCKETS - 1) / DAY) * DAY  # whole days
    start = first_ms // size * size
    return start, size, (last_ms - start) // size + 1


def _clock(ms: int, size: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%d" if size >= DAY else "%m-%d %H:%M")


def timeline_svg(
    counts: dict[str, list[int]],
    colors: dict[str, str],
    start_ms: int,
    size_ms: int,
    peak: int,
    run: str,
) -> str:
    """Stacked bars: interventions per event-time bucket, by pattern."""
    buckets = max((len(v) for v in counts.values()), default=0)
    width, height = 760, 250
    left, right, top, bottom = 44, 12, 30, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = peak or 1
    body = [
        _line(left, top + plot_h, left + plot_w, top + plot_h, "axis"),
        _line(left, top, left, top + plot_h, "axis"),
        _text(left - 4, top + 8, f"{peak:,}", "tick", "end"),
        _text(left - 4, top + plot_h, "0", "tick", "end"),
    ]
    x = left
    for pattern in sorted(counts):
        body.append(f'<rect x="{num(x)}" y="8" width="10" height="10" fill="{colors[pattern]}"/>')
        body.append(_text(x + 14, 17, pattern, "note"))
        x += 24 + 7 * len(pattern)
    if not buckets:
        body.append(
            _text(left + plot_w / 2, top + plot_h / 2, "no interventions", "note", "middle")
        )
        return _svg("timeline", width, height, "interventions over time", body, run=run)
    bw = plot_w / buckets
    every = max(1, math.ceil(buckets / 8))
    for i in range(buckets):
        at = start_ms + i * size_ms
        base = float(top + plot_h)
        for pattern in sorted(counts):
            n = counts[pattern][i]
            if not n:
                continue
            h = n / peak * plot_h
            base -= h
            title = f"{_clock(at, size_ms)} UTC, {duration(size_ms / MINUTE)}: {pattern} {n:,}"
            body.append(
                _rect(
                    left + i * bw + 0.5,
                    base,
                    bw - 1,
                    h,
                    colors[pattern],
                    title,
                    pattern=pattern,
                    n=str(n),
                )
            )
        if i % every == 0:
            tx = left + i * bw
            body.append(_line(tx, top + plot_h, tx, top + plot_h + 4, "axis"))
            body.append(_text(tx, top + plot_h + 16, _clock(at, size_ms), "tick", "middle"))
    body.append(
        _text(
            left + plot_w,
            height - 4,
            f"event time, UTC; buckets of {duration(size_ms / MINUTE)}",
            "note",
            "end",
        )
    )
    return _svg("timeline", width, height, "interventions over time by pattern", body, run=run)


# -- horizontal bar tables (spend vs conversions, changes by category) ---------------------


@dataclass(frozen=True)
class Column:
    """One column of bars: a measure, its colour, and the scale (shared between runs)."""

    title: str
    color: str
    peak: float
    decimals: int = 0
    #: index of the column this one is a share of: its label adds the rate ("15 · 2.2%")
    rate_of: int | None = None


def bar_table_svg(
    plot: str,
    label: str,
    rows: Sequence[tuple[str, Sequence[float]]],
    columns: Sequence[Column],
    **data: str,
) -> str:
    """Rows of labelled bars, one column per measure, each column on its own scale."""
    name_w, col_w, row, head = 250, 190, 22, 26
    width = name_w + col_w * len(columns) + 10
    height = head + row * max(1, len(rows)) + 6
    body: list[str] = []
    for j, col in enumerate(columns):
        body.append(_text(name_w + j * col_w, 16, col.title, "note"))
    if not rows:
        body.append(_text(name_w, head + 15, "nothing to show", "note"))
    for i, (name, values) in enumerate(rows):
        y = head + i * row
        name_text = _text(name_w - 8, y + 15, short(name, 36), anchor="end")
        body.append(f"<g><title>{esc(name)}</title>{name_text}</g>")
        for j, (col, value) in enumerate(zip(columns, values, strict=True)):
            x = name_w + j * col_w
            w = (value / col.peak if col.peak > 0 else 0.0) * (col_w - 84)
            shown = f"{value:,.{col.decimals}f}"
            if col.rate_of is not None and values[col.rate_of] > 0:
                shown += f" · {value / values[col.rate_of]:.1%}"
            body.append(
                _rect(
                    x,
                    y + 4,
                    w,
                    row - 8,
                    col.color,
                    f"{name}: {col.title} {shown}",
                    row=name,
                    column=col.title,
                    n=f"{value:.{col.decimals}f}",
                )
            )
            body.append(_text(x + w + 4, y + 15, shown, "value"))
    return _svg(plot, width, height, label, body, **data)
