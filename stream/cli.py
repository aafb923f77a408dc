"""The ``goldenflow`` command line."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import click
from pydantic import ValidationError

from stream.cli_options import env_option
from stream.config import ENV_PREFIX, Settings
from stream.errors import GoldenflowError
from stream.generate import generate_command
from stream.replay.command import replay_command

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(*names: str) -> Callable[[F], F]:
    """Add one ``--flag`` per named setting, showing the env var behind it in --help."""

    def decorate(func: F) -> F:
        for name in reversed(names):
            field = Settings.model_fields[name]
            flag = "--" + name.replace("_", "-")
            secret = name.endswith("password")
            default = None if secret else field.default
            help_text = field.description or ""
            if default is not None and not secret:
                help_text += f"  [default: {default}]"
            func = click.option(
                flag,
                name,
                default=None,
                envvar=ENV_PREFIX + name.upper(),
                show_envvar=True,
                help=help_text,
            )(func)
        return func

    return decorate


RULES_DIR_OPTION = env_option(
    "--rules-dir",
    "GOLDENFLOW_RULES_DIR",
    Path("rules"),
    "folder of rule files",
    type=click.Path(path_type=Path),
)


def make_settings(values: dict[str, Any]) -> Settings:
    """Settings from the given flag values (None means: from env or default)."""
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise click.UsageError(f"invalid settings: {problems}") from None


KAFKA = (
    "broker_url",
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "fetch_wait_ms",
    "profile",
)
TOPICS = ("app_id", "topic_prefix", "partitions", "replication_factor")
ENGINE = (
    "rules_dir",
    "lateness_ms",
    "idle_ms",
    "max_future_ms",
    "horizon_ms",
    "batch_max",
    "batch_within_ms",
    "drain",
    "standby_replicas",
)
PROCESS = ("web_host", "web_port", "log_level", "data_dir")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="goldenflow")
def main() -> None:
    """goldenflow: real-time interventions for e-commerce checkout funnels on Kafka."""


@main.command()
@env_option(
    "--port", "GOLDENFLOW_BROKER_PORT", 9092, "port to listen on (0: pick a free one)", type=int
)
@env_option("--host", "GOLDENFLOW_BROKER_HOST", "127.0.0.1", "address to listen on")
@env_option(
    "--storage",
    "GOLDENFLOW_BROKER_STORAGE",
    "memory://tansu/",
    "storage engine (memory:// or s3://)",
)
def broker(port: int, host: str, storage: str) -> None:
    """Run the embedded Kafka-protocol broker (for the demo and tests) until Ctrl-C."""
    from stream.broker import EmbeddedBroker, free_port

    emb = EmbeddedBroker(port=port or free_port(host), host=host, storage=storage)
    try:
        emb.start()
    except GoldenflowError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"embedded broker ready on {emb.bootstrap} (GOLDENFLOW_BROKER_URL={emb.url})")
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop["now"] and emb.process is not None and emb.process.poll() is None:
        time.sleep(0.2)
    code = emb.stop()
    click.echo(f"embedded broker stopped (exit {code})")


@main.command()
@settings_options(*KAFKA, *TOPICS, *ENGINE, *PROCESS)
def worker(**values: Any) -> None:
    """Run a worker: consume the input topics, detect patterns, publish interventions."""
    from stream.app.run import run_worker
    from stream.logs import setup_logging

    settings = make_settings(values)
    setup_logging(settings.log_level)
    try:
        run_worker(settings)
    except GoldenflowError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@env_option(
    "--duration",
    "GOLDENFLOW_DEMO_DURATION",
    None,
    "stop after this many seconds (default: until Ctrl-C)",
    type=float,
)
@env_option(
    "--speed",
    "GOLDENFLOW_DEMO_SPEED",
    60.0,
    "event time runs this many times faster than the wall clock",
    type=float,
)
@env_option(
    "--rate", "GOLDENFLOW_DEMO_RATE", 40.0, "new shoppers per wall-clock second", type=float
)
@env_option("--seed", "GOLDENFLOW_DEMO_SEED", 7, "traffic random seed", type=int)
@env_option(
    "--lift",
    "GOLDENFLOW_DEMO_LIFT",
    0.25,
    "what an intervention adds to a shopper's chance of converting (the report measures it)",
    type=float,
)
@RULES_DIR_OPTION
@env_option(
    "--workdir",
    "GOLDENFLOW_DEMO_WORKDIR",
    Path(".demo"),
    "where logs of the broker and worker go",
    type=click.Path(path_type=Path),
)
def demo(
    duration: float | None,
    speed: float,
    rate: float,
    seed: int,
    lift: float,
    rules_dir: Path,
    workdir: Path,
) -> None:
    """Start the embedded broker, a worker and generated shoppers; show interventions live."""
    from stream.demo.runner import DemoOptions, run_demo

    try:
        code = run_demo(
            DemoOptions(
                duration=duration,
                speed=speed,
                rate=rate,
                seed=seed,
                lift=lift,
                rules_dir=rules_dir,
                workdir=workdir,
            )
        )
    except GoldenflowError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@main.command()
@click.argument("source", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="print one JSON document instead of tables")
@env_option(
    "--pattern",
    "GOLDENFLOW_REPORT_PATTERN",
    None,
    "only decisions of this pattern (repeat for more)",
    multiple=True,
)
@env_option(
    "--by",
    "GOLDENFLOW_REPORT_BY",
    "rule",
    "one row per pattern and rule, or per pattern",
    type=click.Choice(["rule", "pattern"]),
)
@env_option(
    "--timeout",
    "GOLDENFLOW_REPORT_TIMEOUT",
    30.0,
    "give up when Kafka sends nothing for this many seconds",
    type=float,
)
@settings_options(*KAFKA, "topic_prefix")
def report(
    source: Path | None,
    as_json: bool,
    pattern: tuple[str, ...],
    by: Literal["rule", "pattern"],
    timeout: float,
    **values: Any,
) -> None:
    """Print decisions and uplift per pattern and rule from the outcomes records.

    SOURCE is a JSON-lines file of outcomes records (.gz allowed). Without it the
    <topic-prefix>.outcomes topic is read from its start up to its end at start.
    """
    import orjson

    from stream.report.outcomes import read_file, read_topic
    from stream.report.render import print_text, report_document
    from stream.report.uplift import build_report

    try:
        if source is not None:
            outcomes = read_file(source)
        else:
            outcomes = read_topic(make_settings(values), idle_timeout=timeout)
        result = build_report(outcomes, by=by, patterns=pattern)
    except GoldenflowError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(orjson.dumps(report_document(result), option=orjson.OPT_INDENT_2).decode())
    else:
        print_text(result)


RULES_PATH = click.argument(
    "path", type=click.Path(path_type=Path), default=Path("rules"), envvar="GOLDENFLOW_RULES_DIR"
)


@main.group()
def rules() -> None:
    """Tools for rule authors: check, test and explain the rule files."""


@rules.command("check")
@RULES_PATH
def rules_check(path: Path) -> None:
    """Validate every rule file; print each problem as file:line: message."""
    from stream.decide.rulebook import load_rulebook
    from stream.errors import RuleFileError

    try:
        book = load_rulebook(path)
    except RuleFileError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        click.echo(f"{len(exc.problems)} problem(s); the rules were not loaded", err=True)
        sys.exit(1)
    rulesets = {r.ruleset for r in book.decider.rules.values()}
    click.echo(
        f"ok: {len(book.decider.rules)} rules in {len(rulesets)} rulesets, version {book.version}"
    )


@rules.command("test")
@RULES_PATH
def rules_test(path: Path) -> None:
    """Run the test cases kept beside the rules (*.test.yaml)."""
    from stream.decide.rulebook import load_rulebook
    from stream.decide.ruletests import run_tests
    from stream.errors import RuleFileError

    try:
        book = load_rulebook(path)
        results = run_tests(book, path)
    except RuleFileError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    for r in results:
        status = "PASS" if r.passed else "FAIL"
        click.echo(f"{status} {r.path}:{r.line} {r.name}" + ("" if r.passed else f": {r.detail}"))
    failed = sum(not r.passed for r in results)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    sys.exit(1 if failed or not results else 0)


@rules.command("explain")
@click.argument("fact_file", type=click.File("rb"))
@RULES_DIR_OPTION
def rules_explain(fact_file: Any, rules_dir: Path) -> None:
    """Print the decision for a fact (a JSON object with a pattern field) and why."""
    import orjson

    from stream.decide.rulebook import load_rulebook
    from stream.decide.ruletests import fact_from
    from stream.errors import RuleFileError

    try:
        book = load_rulebook(rules_dir)
    except RuleFileError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        values = orjson.loads(fact_file.read())
    except orjson.JSONDecodeError as exc:
        raise click.ClickException(f"{fact_file.name}: not JSON ({exc})") from None
    if not isinstance(values, dict) or "pattern" not in values:
        raise click.ClickException(f"{fact_file.name}: expected a JSON object with a pattern")
    fact = fact_from(values)
    decision = book.decider.decide(fact)
    derived = book.decider.enrich(fact)
    if decision is None:
        click.echo(
            f"no rule matches (rules {book.version}); intent {derived['intent']} "
            f"{derived['intent_contributions']}"
        )
        return
    click.echo(
        f"{decision.rule_id}: {decision.type} via {decision.channel} "
        f"({decision.mode}, rules {book.version})"
    )
    click.echo(
        orjson.dumps(
            {"params": decision.params, "explanation": decision.explanation},
            option=orjson.OPT_INDENT_2,
        ).decode()
    )


@main.group("import")
def import_cmd() -> None:
    """Convert public shop datasets into an events file (docs/importers.md)."""


IMPORT_SOURCES = click.argument(
    "src", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path)
)
IMPORT_OUT = click.option(
    "--out",
    required=True,
    envvar="GOLDENFLOW_IMPORT_OUT",
    show_envvar=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="events file to write: JSON lines, gzip-compressed if it ends in .gz",
)


def run_import(dataset: str, src: tuple[Path, ...], out: Path) -> None:
    from stream.importers import run_import as convert

    try:
        stats = convert(dataset, list(src), out)
    except GoldenflowError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(stats.summary())
    click.echo(f"wrote {out}")


@import_cmd.command("rees46")
@IMPORT_SOURCES
@IMPORT_OUT
def import_rees46(src: tuple[Path, ...], out: Path) -> None:
    """REES46 e-commerce behaviour CSV files (or folders of them), e.g. 2019-Oct.csv."""
    run_import("rees46", src, out)


@import_cmd.command("taobao")
@IMPORT_SOURCES
@IMPORT_OUT
def import_taobao(src: tuple[Path, ...], out: Path) -> None:
    """Taobao UserBehavior CSV files (or folders of them), sorted by user then time."""
    run_import("taobao", src, out)


@import_cmd.command("olist")
@IMPORT_SOURCES
@IMPORT_OUT
def import_olist(src: tuple[Path, ...], out: Path) -> None:
    """Olist tables (orders, payments, order items; products, categories, customers)."""
    run_import("olist", src, out)


@main.group(invoke_without_command=True)
@env_option("--events", "GOLDENFLOW_BENCH_EVENTS", 200_000, "events to generate", type=int)
@env_option("--shoppers", "GOLDENFLOW_BENCH_SHOPPERS", 10_000, "distinct shoppers", type=int)
@env_option("--partitions", "GOLDENFLOW_BENCH_PARTITIONS", 8, "partitions of every topic", type=int)
@click.option(
    "--quick",
    is_flag=True,
    help="tiny sizes, no quix-streams or bytewax: a smoke test of the harness",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="write the result here  [default: <workdir>/<run>/bench.json]",
)
@env_option(
    "--broker-url",
    "GOLDENFLOW_BENCH_BROKER_URL",
    None,
    "a Kafka cluster to use (default: start the embedded broker on a free port)",
)
@env_option(
    "--only",
    "GOLDENFLOW_BENCH_ONLY",
    None,
    "comma-separated sections: passthrough,faust,peers,worker,replay,decide",
)
@env_option(
    "--latency-seconds",
    "GOLDENFLOW_BENCH_LATENCY_SECONDS",
    None,
    "length of the latency phase  [default: 30, quick: 6]",
    type=float,
)
@env_option(
    "--rate",
    "GOLDENFLOW_BENCH_RATE",
    None,
    "background events/s during the latency phase  [default: 1000, quick: 500]",
    type=float,
)
@env_option(
    "--feed-linger-ms",
    "GOLDENFLOW_BENCH_FEED_LINGER_MS",
    None,
    "linger of the background traffic's producer in the latency phase (the probes send "
    "at once)  [default: 50]",
    type=int,
)
@env_option(
    "--repeat",
    "GOLDENFLOW_BENCH_REPEAT",
    1,
    "runs of each peer (pass-through, faust, quix, bytewax); the best one counts",
    type=int,
)
@env_option(
    "--replay-events",
    "GOLDENFLOW_BENCH_REPLAY_EVENTS",
    None,
    "replay (and decide the facts of) only the first N events  [default: all]",
    type=int,
)
@env_option(
    "--quix-python",
    "GOLDENFLOW_BENCH_QUIX_PYTHON",
    None,
    "python of a virtualenv with quixstreams and orjson (default: this one)",
)
@RULES_DIR_OPTION
@env_option(
    "--workdir",
    "GOLDENFLOW_BENCH_WORKDIR",
    Path(".bench"),
    "logs of the broker, workers and peers",
    type=click.Path(path_type=Path),
)
@click.pass_context
def bench(
    ctx: click.Context,
    events: int,
    shoppers: int,
    partitions: int,
    quick: bool,
    json_path: Path | None,
    broker_url: str | None,
    only: str | None,
    latency_seconds: float | None,
    rate: float | None,
    feed_linger_ms: int | None,
    repeat: int,
    replay_events: int | None,
    quix_python: str | None,
    rules_dir: Path,
    workdir: Path,
) -> None:
    """Benchmarks (docs/performance.md). Without a subcommand: the standard benchmark.

    Generated events go into the input topics up front; then the raw aiokafka
    limit, faust, quix-streams and bytewax (if installed), one goldenflow worker
    (events/s, start-up, memory, latency under load), replay and rule decisions
    are measured on them, and the figures printed and written as JSON.
    """
    if ctx.invoked_subcommand is not None:
        return
    from stream.bench.render import print_result
    from stream.bench.standard import SECTIONS, BenchOptions, run_bench

    sections: tuple[str, ...] | None = None
    if only:
        sections = tuple(s.strip() for s in only.split(",") if s.strip())
        unknown = sorted(set(sections) - set(SECTIONS))
        if unknown:
            raise click.UsageError(f"--only: unknown sections {unknown}; choose from {SECTIONS}")
    common: dict[str, Any] = {
        "broker_url": broker_url,
        "rules_dir": rules_dir,
        "workdir": workdir,
        "quix_python": quix_python,
        "latency_seconds": latency_seconds,
        "rate": rate,
        "feed_linger_ms": feed_linger_ms,
        "sections": sections,
        "replay_events": replay_events,
        "repeat": repeat,
        "out": json_path,
    }
    if quick:
        opts = BenchOptions.quick_run(**common)
    else:
        opts = BenchOptions(
            events=events,
            shoppers=shoppers,
            partitions=partitions,
            **{k: v for k, v in common.items() if v is not None},
        )
    try:
        doc, out = run_bench(opts, lambda line: click.echo(line, err=True))
    except GoldenflowError as exc:
        raise click.ClickException(str(exc)) from None
    print_result(doc)
    click.echo(f"wrote {out}")


@bench.command("memory")
@env_option("--events", "GOLDENFLOW_BENCH_EVENTS", 1_000_000, "events to send", type=int)
@env_option("--shoppers", "GOLDENFLOW_BENCH_SHOPPERS", 100_000, "distinct shoppers", type=int)
@env_option(
    "--first", "GOLDENFLOW_BENCH_FIRST", 200_000, "also sample RSS after this many events", type=int
)
@env_option(
    "--out",
    "GOLDENFLOW_BENCH_OUT",
    Path("bench-memory.json"),
    "JSON result file",
    type=click.Path(path_type=Path),
)
@env_option(
    "--workdir",
    "GOLDENFLOW_BENCH_WORKDIR",
    Path(".bench"),
    "logs of the broker and worker",
    type=click.Path(path_type=Path),
)
def bench_memory(events: int, shoppers: int, first: int, out: Path, workdir: Path) -> None:
    """Worker RSS after --first and after --events events (30 days of traffic, 7-day expiry)."""
    import json

    from stream.bench.memory import run_memory

    result = run_memory(events, shoppers, [first, events], workdir)
    rows = []
    for n, rss, journeys in result.checkpoints:
        per = result.per_journey(rss, journeys)
        rows.append(
            {
                "events": n,
                "rss_mib": round(rss / 2**20, 1),
                "journeys": journeys,
                "rss_growth_per_journey_bytes": None if per is None else round(per),
            }
        )
    ratio = result.checkpoints[-1][1] / result.checkpoints[0][1]
    click.echo(f"worker RSS when ready, before any event: {result.rss_ready / 2**20:.1f} MiB")
    for row in rows:
        per = row["rss_growth_per_journey_bytes"]
        click.echo(
            f"after {row['events']:>9,} events: worker RSS {row['rss_mib']:>7.1f} MiB, "
            f"{row['journeys']:,} journeys, "
            f"{'-' if per is None else f'{per:,}'} bytes of growth per journey"
        )
    click.echo(f"ratio last/first: {ratio:.2f} ({result.seconds:.0f} s)")
    out.write_text(
        json.dumps(
            {
                "shoppers": shoppers,
                "rss_ready_mib": round(result.rss_ready / 2**20, 1),
                "samples": rows,
                "ratio": ratio,
                "seconds": round(result.seconds, 1),
            },
            indent=2,
        )
        + "\n"
    )


main.add_command(replay_command)
main.add_command(generate_command)

if __name__ == "__main__":
    main()
