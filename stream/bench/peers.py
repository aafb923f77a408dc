"""Peer stream processors for ``goldenflow bench``: quix-streams and bytewax.

Each does the same stateful job on the benchmark's input topics: decode the JSON
event, count events per key (the shopper), and produce ``{"user_id", "count"}`` to
an output topic on every tenth event of a key. When it has seen ``--expect``
events it writes ``{"count", "first", "last"}`` (wall-clock seconds of the first
and last event) to ``--result``; the harness reads that and stops the process.

This file imports nothing from goldenflow (only the standard library, orjson and
the framework), so it also runs from a virtualenv of its own: quix-streams needs an
older pydantic than goldenflow pins. Run it as ``python peers.py quix|bytewax ...``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson


class Progress:
    """Counts events and writes the result file once, at the expected count."""

    def __init__(self, expect: int, result: Path) -> None:
        self.expect = expect
        self.result = result
        self.count = 0
        self.first = 0.0
        self.done = False

    def tick(self) -> bool:
        """Count one event; True when the expected count has just been reached."""
        now = time.time()
        if self.count == 0:
            self.first = now
        self.count += 1
        if self.count >= self.expect and not self.done:
            self.done = True
            write_result(self.result, {"count": self.count, "first": self.first, "last": now})
            return True
        return False


def write_result(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(result))
    os.replace(tmp, path)


def available(framework: str) -> bool:
    """True if the framework can be imported by this interpreter."""
    module = {"quix": "quixstreams", "bytewax": "bytewax.connectors.kafka"}[framework]
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def run_quix(args: argparse.Namespace) -> None:
    qs = importlib.import_module("quixstreams")
    app = qs.Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=str(args.state_dir),
        loglevel="WARNING",
        auto_create_topics=True,
        commit_interval=1.0,
    )
    progress = Progress(args.expect, args.result)
    out = app.topic(args.out_topic, key_serializer="bytes", value_serializer="bytes")

    def count(value: bytes, state: Any) -> bytes | None:
        body = orjson.loads(value)
        n = state.get("n", 0) + 1
        state.set("n", n)
        if progress.tick():
            app.stop()
        if n % 10 == 0:
            return orjson.dumps({"user_id": body["user_id"], "count": n})
        return None

    for name in args.topics:
        topic = app.topic(name, key_deserializer="bytes", value_deserializer="bytes")
        sdf = app.dataframe(topic=topic)
        sdf = sdf.apply(count, stateful=True).filter(lambda v: v is not None)
        sdf.to_topic(out)
    app.run()


def run_bytewax(args: argparse.Namespace) -> None:
    dataflow = importlib.import_module("bytewax.dataflow")
    op = importlib.import_module("bytewax.operators")
    kafka = importlib.import_module("bytewax.connectors.kafka")
    testing = importlib.import_module("bytewax.testing")
    progress = Progress(args.expect, args.result)

    flow = dataflow.Dataflow("goldenflow_bench_count")
    source = kafka.KafkaSource(
        [args.bootstrap], args.topics, tail=False, add_config={"fetch.wait.max.ms": "50"}
    )
    messages = op.input("in", flow, source)
    keyed = op.key_on("key", messages, lambda m: (m.key or b"").decode())

    def count(state: int | None, msg: Any) -> tuple[int, bytes | None]:
        body = orjson.loads(msg.value)
        n = (state or 0) + 1
        progress.tick()
        return n, orjson.dumps({"user_id": body["user_id"], "count": n}) if n % 10 == 0 else None

    counted = op.stateful_map("count", keyed, count)
    emitted = op.filter_map(
        "emit",
        counted,
        lambda kv: None if kv[1] is None else kafka.KafkaSinkMessage(kv[0].encode(), kv[1]),
    )
    op.output("out", emitted, kafka.KafkaSink([args.bootstrap], args.out_topic))
    testing.run_main(flow)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("framework", choices=["quix", "bytewax", "check"])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--topics", type=lambda s: s.split(","), default=[])
    parser.add_argument("--out-topic", default="")
    parser.add_argument("--group", default="goldenflow-bench-peer")
    parser.add_argument("--expect", type=int, default=0)
    parser.add_argument("--result", type=Path, default=Path("peer-result.json"))
    parser.add_argument("--state-dir", type=Path, default=Path("peer-state"))
    parser.add_argument("--which", default="", help="with 'check': quix or bytewax")
    args = parser.parse_args(argv)
    if args.framework == "check":
        return 0 if available(args.which) else 1
    if args.framework == "quix":
        run_quix(args)
    else:
        run_bytewax(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
