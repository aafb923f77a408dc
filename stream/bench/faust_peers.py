"""Faust peers for ``goldenflow bench``, run as a worker process of their own.

``noop``: an agent that takes every event of the input topics and does nothing
(faust's per-message ceiling). ``table``: per event, decode the JSON, add one to a
changelog-backed table entry keyed by the shopper, and produce the count on every
tenth event of a key (the same job as the quix-streams and bytewax peers).

Both use the worker's own faust settings (``stream.app.worker.faust_options``:
the embedded profile's short group timings, producer linger) with the web server
off. The result protocol is that of :mod:`stream.bench.peers`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.worker import Worker

from stream.app.embedded import use_fetch_highwaters
from stream.app.worker import faust_options
from stream.bench.peers import Progress
from stream.config import Settings


def build_app(mode: str, settings: Settings, out_topic: str, progress: Progress) -> faust.App:
    opts = faust_options(settings)
    opts["web_enabled"] = False
    app = faust.App(settings.app_id, **opts)
    if settings.profile == "embedded":
        use_fetch_highwaters(app, settings)
    source = app.topic(*settings.input_topics, value_serializer="raw", key_serializer="raw")

    if mode == "noop":

        @app.agent(source, name="bench.noop")
        async def noop(stream: Any) -> None:
            async for _ in stream:
                progress.tick()

        return app

    # values as decimal bytes, like the worker's table (raw serializers throughout)
    table = app.Table(
        "counts", default=bytes, partitions=settings.partitions, key_type=bytes, value_type=bytes
    )
    out = app.topic(out_topic, value_serializer="raw", key_serializer="raw")

    @app.agent(source, name="bench.count")
    async def count(stream: Any) -> None:
        async for event in stream.events():
            body = orjson.loads(event.value)
            key = event.key
            n = int(table[key] or b"0") + 1
            table[key] = b"%d" % n
            if n % 10 == 0:
                value = orjson.dumps({"user_id": body["user_id"], "count": n})
                await out.send(key=key, value=value)
            progress.tick()

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["noop", "table"])
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--profile", default="embedded", choices=["embedded", "production"])
    parser.add_argument("--app-id", required=True)
    parser.add_argument("--topic-prefix", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    parser.add_argument("--out-topic", required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = Settings(
        broker_url=args.broker_url,
        profile=args.profile,
        app_id=args.app_id,
        topic_prefix=args.topic_prefix,
        partitions=args.partitions,
        data_dir=args.data_dir,
    )
    app = build_app(args.mode, settings, args.out_topic, Progress(args.expect, args.result))
    Worker(app, loglevel="warning", quiet=True).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
