"""The replay's HTML report, opened in a real headless browser.

Replay a log, write the report, load it in Debian's Chromium over the DevTools
protocol and check what the browser saw: no console errors or exceptions, every plot
rendered with a visible size and the bars the data calls for, untrusted strings shown
as text (never run), and the same inputs giving the same bytes. Chromium is
installed once per session when missing (like Prometheus for the deployment tests).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from click.testing import CliRunner

from stream.cli import main
from stream.decide.rulebook import RuleBook, load_rulebook
from stream.domain.timeutil import HOUR, MINUTE
from stream.importers.common import Stats, write_events
from stream.importers.taobao import read as read_taobao
from stream.replay.compare import compare
from stream.replay.html import MAX_DWELL_CATEGORIES, write_html
from stream.replay.plots import duration
from stream.replay.run import ReplayResult, replay
from tests.deploy.tools import install_debian_package
from tests.helpers import REPO, RULES, T0, EventMaker, wait_until

TAOBAO_EXCERPT = REPO / "tests" / "data" / "taobao_UserBehavior_excerpt.csv"
EVIL_CATEGORY = "<script>alert(1)</script>"
EVIL_USER = "\"'><img src=x onerror=alert(2)>"
PLOTS = ("funnel", "dwell", "timeline", "spend")


# -- Chromium ------------------------------------------------------------------------------


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def install_chromium() -> tuple[bool, str]:
    """``apt-get install -y chromium`` (Debian's); (succeeded, output)."""
    return install_debian_package("chromium", 900)


@dataclass
class PageReport:
    """What the browser saw on a page."""

    dom: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    probe_seen: bool = False


#: Evaluated in the page once it has loaded: the plots and tables as the browser laid them out.
INSPECT = """
(() => {
  const box = (el) => { const r = el.getBoundingClientRect(); return [r.width, r.height]; };
  const plots = [...document.querySelectorAll('svg[data-plot]')].map((svg) => ({
    plot: svg.dataset.plot,
    run: svg.dataset.run ?? null,
    category: svg.dataset.category ?? null,
    box: box(svg),
    bars: [...svg.querySelectorAll('rect.bar')].map((b) => ({
      n: Number(b.dataset.n),
      key: b.dataset.pattern ?? b.dataset.step ?? b.dataset.row ?? null,
      column: b.dataset.column ?? null,
      box: box(b),
    })),
    dwellLines: [...svg.querySelectorAll('line.dwell')].map((l) => ({
      run: l.dataset.run, box: box(l),
    })),
    text: svg.textContent,
  }));
  const rows = (name) =>
    document.querySelectorAll(`table[data-table="${name}"] tr`).length;
  return {
    title: document.title,
    scripts: document.querySelectorAll('script').length,
    images: document.querySelectorAll('img, image, iframe, object, embed').length,
    handlers: [...document.querySelectorAll('*')].filter(
      (el) => [...el.attributes].some((a) => a.name.startsWith('on'))).length,
    plots,
    compareRows: rows('compare-rows'),
    sampleRows: rows('compare-sample'),
    text: document.body.textContent,
  };
})()
"""


class Browser:
    """A headless Chromium with its DevTools endpoint on a free local port."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.profile = profile
        self.log = profile.parent / "chromium.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--headless=new",
                    "--no-sandbox",  # the tests may run as root
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--remote-debugging-port=0",
                    "--remote-debugging-address=127.0.0.1",
                    f"--user-data-dir={profile}",
                    "about:blank",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        port_file = profile / "DevToolsActivePort"
        wait_until(self._started, 30, f"Chromium's {port_file}")
        self.port = int(port_file.read_text().split()[0])

    def _started(self) -> bool:
        assert self.proc.poll() is None, f"chromium exited: {self.log.read_text()[-3000:]}"
        return (self.profile / "DevToolsActivePort").is_file() and bool(
            (self.profile / "DevToolsActivePort").read_text().strip()
        )

    def _http(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        with urllib.request.urlopen(request, timeout=10) as resp:
            return json.loads(resp.read())

    def inspect(self, page: Path, timeout: float = 20.0) -> PageReport:
        """Open the file in a new tab, wait for it to load and report what happened."""
        target = self._http("/json/new?about:blank", method="PUT")
        try:
            return asyncio.run(
                _inspect(target["webSocketDebuggerUrl"], page.resolve().as_uri(), timeout)
            )
        finally:
            urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}/json/close/{target['id']}", timeout=10
            ).close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


async def _inspect(ws_url: str, url: str, timeout: float) -> PageReport:
    report = PageReport(dom={})
    loaded = asyncio.Event()
    pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
    probe = "cdp-probe-console-error"
    background: list[asyncio.Future[dict[str, Any]]] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(ws_url, max_msg_size=0) as ws,
    ):
        counter = iter(range(1, 1_000_000))

        async def call(method: str, **params: Any) -> dict[str, Any]:
            ident = next(counter)
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            pending[ident] = future
            await ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
            reply = await asyncio.wait_for(future, timeout)
            assert "error" not in reply, f"{method}: {reply['error']}"
            return dict(reply.get("result", {}))

        def on_event(method: str, params: dict[str, Any]) -> None:
            if method == "Page.loadEventFired":
                loaded.set()
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                text = " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                if text == probe:
                    report.probe_seen = True
                else:
                    report.errors.append(f"console.{params['type']}: {text}")
            elif method == "Runtime.exceptionThrown":
                report.errors.append(f"exception: {params['exceptionDetails']}")
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                report.errors.append(f"log: {params['entry'].get('text')}")
            elif method == "Page.javascriptDialogOpening":
                report.dialogs.append(str(params.get("message")))
                background.append(
                    asyncio.ensure_future(call("Page.handleJavaScriptDialog", accept=True))
                )

        async def read() -> None:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                if "id" in data and data["id"] in pending:
                    pending.pop(data["id"]).set_result(data)
                elif "method" in data:
                    on_event(data["method"], data.get("params", {}))

        reader = asyncio.create_task(read())
        try:
            for domain in ("Runtime", "Log", "Page"):
                await call(f"{domain}.enable")
            navigated = await call("Page.navigate", url=url)
            assert not navigated.get("errorText"), navigated
            await asyncio.wait_for(loaded.wait(), timeout)
            result = await call(
                "Runtime.evaluate", expression=INSPECT, returnByValue=True, awaitPromise=True
            )
            assert "exceptionDetails" not in result, result
            report.dom = result["result"]["value"]
            # The harness must see console errors: send one and wait until it arrives.
            await call("Runtime.evaluate", expression=f"console.error({json.dumps(probe)})")
            deadline = time.monotonic() + timeout
            while not report.probe_seen and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            reader.cancel()
    return report


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """Headless Chromium; Debian's package is installed once when it is missing."""
    binary = find_chromium()
    if binary is None:
        installed, output = install_chromium()
        binary = find_chromium()
        if binary is None:
            what = "was installed but provides no binary" if installed else "cannot be installed"
            pytest.skip(
                f"Chromium {what} (apt-get update && apt-get install -y chromium):\n"
                f"{output[-2000:]}"
            )
    instance = Browser(binary, tmp_path_factory.mktemp("chromium") / "profile")
    yield instance
    instance.close()


# -- logs and rules ------------------------------------------------------------------------


def taobao_log(dest: Path) -> Path:
    """The Taobao excerpt shipped in tests/data, through the importer."""
    stats = Stats("taobao")
    write_events(read_taobao([TAOBAO_EXCERPT], stats), dest, stats)
    return dest


def crafted_log(dest: Path) -> Path:
    """Shoppers in four categories, one named like a script tag and some users named like
    an HTML injection: quick checkouts, checkouts after two hours, abandoned carts."""
    ev = EventMaker()
    events: list[dict[str, Any]] = []
    categories = ("fresh_food", "books", "electronics.phone", EVIL_CATEGORY)
    for i in range(48):
        category = categories[i % 4]
        user = f"{EVIL_USER}{i}" if category == EVIL_CATEGORY else f"u{i}"
        t = T0 + i * 7 * MINUTE
        sku, price = f"s{i}", 20.0 + i
        events.append(ev.add(user, t, sku=sku, category=category, price=price))
        if i % 3 == 2:
            continue  # left in the cart
        later = t + (5 * MINUTE if i % 3 == 0 else 2 * HOUR)
        item = {"sku": sku, "category": category, "price": price, "qty": 1}
        events.append(ev("checkout_start", user, later, checkout_id=f"c{i}", items=[item]))
        events.append(
            ev(
                "order_created",
                user,
                later + MINUTE,
                order_id=f"o{i}",
                checkout_id=f"c{i}",
                items=[item],
                amount=price,
                pay_deadline=later + HOUR,
            )
        )
        events.append(ev("order_paid", user, later + 2 * MINUTE, order_id=f"o{i}", amount=price))
    events.sort(key=lambda e: e["ts"])
    dest.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    return dest


def rules_with_dwell(dest: Path, **by_category: str) -> Path:
    shutil.copytree(RULES, dest)
    timing = dest / "timing.yaml"
    data = yaml.safe_load(timing.read_text())
    data["cart_stall"]["dwell"].update(by_category)
    timing.write_text(yaml.safe_dump(data))
    return dest


def run(log: Path, rules: Path, keep_facts: bool = False) -> tuple[ReplayResult, RuleBook]:
    book = load_rulebook(rules)
    return replay(log, book, collect_stats=True, keep_facts=keep_facts), book


# -- checks --------------------------------------------------------------------------------


def assert_clean(report: PageReport) -> None:
    assert report.probe_seen, "the console error sent as a probe never reached the test"
    assert report.errors == [], report.errors
    assert report.dialogs == [], report.dialogs
    dom = report.dom
    assert dom["scripts"] == 0 and dom["images"] == 0 and dom["handlers"] == 0, dom
    for plot in dom["plots"]:
        assert plot["box"][0] > 0 and plot["box"][1] > 0, plot
        for bar in plot["bars"]:
            if bar["n"] > 0:
                assert bar["box"][0] > 0 and bar["box"][1] > 0, (plot["plot"], bar)


def plots(report: PageReport, name: str, run_label: str | None = None) -> list[dict[str, Any]]:
    return [
        p
        for p in report.dom["plots"]
        if p["plot"] == name and (run_label is None or p["run"] == run_label)
    ]


def assert_run_plots(
    report: PageReport, label: str, result: ReplayResult, book: RuleBook, runs: int
) -> None:
    """The timeline and spend plots of one run, and the log's funnel and dwell plots."""
    # 1. the funnel: one bar per step, with the shoppers the log counted
    (funnel,) = [p for p in plots(report, "funnel") if label in p["run"].split(", ")]
    assert [(b["key"], b["n"]) for b in funnel["bars"]] == result.stats.funnel()
    # 2. dwell: the categories with the most samples (capped), every sample in a bin
    samples = {c: m for c, m in result.stats.dwell_minutes.items() if m}
    panels = plots(report, "dwell")
    assert len(panels) == min(MAX_DWELL_CATEGORIES, len(samples))
    if not samples:
        assert "No item left a cart in this log." in report.dom["text"]
    for panel in panels:
        category = panel["category"]
        assert sum(b["n"] for b in panel["bars"]) == len(samples[category]), category
        assert len(panel["dwellLines"]) == runs
        assert all(line["box"][1] > 0 for line in panel["dwellLines"])
        assert duration(book.timing.cart_dwell(category) / MINUTE) in panel["text"]
    # 3. interventions over time: every command in some bucket, by pattern
    (timeline,) = plots(report, "timeline", label)
    by_pattern: Counter[str] = Counter()
    for bar in timeline["bars"]:
        by_pattern[bar["key"]] += int(bar["n"])
    assert by_pattern == Counter(c["pattern"] for c in result.commands)
    assert by_pattern, "no interventions: the log should produce some"
    # 4. spend and conversions per rule
    (spend,) = plots(report, "spend", label)
    columns: Counter[str] = Counter()
    for bar in spend["bars"]:
        columns[bar["column"]] += bar["n"]
    decided = [o for o in result.outcomes if o["kind"] == "decision"]
    treated = [o for o in decided if o["arm"] == "treatment"]
    converted = Counter(
        o["arm"]
        for o in result.outcomes
        if o["kind"] == "attribution" and o["result"] == "converted"
    )
    assert columns["treated"] == len(treated)
    assert columns["held out"] == sum(o["arm"] == "control" for o in decided)
    assert columns["converted (treatment)"] == converted["treatment"]
    assert columns["converted (control)"] == converted["control"]
    for unit in {o["unit"] for o in treated if o["cost"]}:
        expected = sum(o["cost"] for o in treated if o["unit"] == unit)
        assert columns[f"spend ({unit})"] == pytest.approx(expected, abs=0.01 * len(treated))


# -- tests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("log_name", ["taobao", "crafted"])
def test_the_report_of_a_replay_renders_every_plot(
    browser: Browser, tmp_path: Path, log_name: str
) -> None:
    make = taobao_log if log_name == "taobao" else crafted_log
    log = make(tmp_path / f"{log_name}.jsonl")
    result, book = run(log, RULES)
    page = tmp_path / "report.html"
    write_html(page, [("replay", result, book)], None)

    report = browser.inspect(page)

    assert_clean(report)
    expected = set(PLOTS) if result.stats.dwell_minutes else set(PLOTS) - {"dwell"}
    assert {p["plot"] for p in report.dom["plots"]} == expected
    assert_run_plots(report, "replay", result, book, runs=1)
    assert report.dom["compareRows"] == 0
    assert book.version in report.dom["text"]
    assert f"{result.events:,}" in report.dom["text"]


def test_the_compare_report_shows_the_differences_and_both_runs(
    browser: Browser, tmp_path: Path
) -> None:
    log = crafted_log(tmp_path / "events.jsonl")
    rules_b = rules_with_dwell(tmp_path / "rules-b", fresh_food="1d", **{EVIL_CATEGORY: "1d"})
    (a, book_a), (b, book_b) = run(log, RULES, True), run(log, rules_b, True)
    doc = compare(a, b, book_a, book_b)
    assert doc["changed_decisions"] > 0 and EVIL_CATEGORY in doc["changed_by_category"]
    page = tmp_path / "compare.html"
    write_html(page, [("A", a, book_a), ("B", b, book_b)], doc)
    raw = page.read_text(encoding="utf-8")

    report = browser.inspect(page)

    assert_clean(report)
    for label, result, book in (("A", a, book_a), ("B", b, book_b)):
        assert_run_plots(report, label, result, book, runs=2)
    # the log's own plots are drawn once; the dwell lines of A and B differ where B moved
    assert len(plots(report, "funnel")) == 1
    for panel in plots(report, "dwell"):
        lines = {line["run"]: line["box"] for line in panel["dwellLines"]}
        assert set(lines) == {"A", "B"}
    moved = {p["category"] for p in plots(report, "dwell")} & {"fresh_food", EVIL_CATEGORY}
    assert moved == {"fresh_food", EVIL_CATEGORY}
    # the differences: changed rows, changed decisions by category, the sample
    changed_rows = [r for r in doc["rows"] if r["changed"]]
    assert changed_rows and report.dom["compareRows"] == 1 + len(changed_rows)
    (by_category,) = plots(report, "changed-by-category")
    direct = {b["key"]: b["n"] for b in by_category["bars"] if b["column"] == "direct"}
    assert {c: n for c, n in direct.items() if n} == doc["changed_by_category"]
    assert report.dom["sampleRows"] == 1 + len(doc["sample"])
    assert "explanation" in raw and '"rule"' not in raw  # explanations are escaped JSON
    # untrusted strings: shown as text, never markup
    assert EVIL_CATEGORY in report.dom["text"]
    assert any(EVIL_USER in entry.get("user_id", "") for entry in doc["sample"])
    assert EVIL_USER in report.dom["text"]
    assert "<script" not in raw.lower() and "<img" not in raw.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw


def test_the_same_inputs_give_byte_identical_reports(tmp_path: Path) -> None:
    log = crafted_log(tmp_path / "events.jsonl")
    rules_b = rules_with_dwell(tmp_path / "rules-b", books="30m")
    pages = []
    for name in ("one", "two"):
        (a, book_a), (b, book_b) = run(log, RULES, True), run(log, rules_b, True)
        single, pair = tmp_path / f"{name}.html", tmp_path / f"{name}-compare.html"
        write_html(single, [("replay", a, book_a)], None)
        write_html(pair, [("A", a, book_a), ("B", b, book_b)], compare(a, b, book_a, book_b))
        pages.append((single.read_bytes(), pair.read_bytes()))
    assert pages[0] == pages[1]
    assert pages[0][0] != pages[0][1]
    # the command writes the same report
    cli_page = tmp_path / "cli.html"
    args = ["replay", str(log), "--rules", str(RULES), "--html", str(cli_page)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert cli_page.read_bytes() == pages[0][0]


def test_the_browser_check_sees_errors_exceptions_and_dialogs(
    browser: Browser, tmp_path: Path
) -> None:
    """The check itself: a page that logs an error, throws and opens a dialog fails it."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>broken</p><script>"
        "console.error('logged'); alert('dialog'); throw new Error('thrown');"
        "</script></body></html>"
    )
    report = browser.inspect(page)
    assert report.probe_seen
    assert any("logged" in e for e in report.errors), report.errors
    assert any("thrown" in e for e in report.errors), report.errors
    assert report.dialogs == ["dialog"]
    with pytest.raises(AssertionError):
        assert_clean(report)
