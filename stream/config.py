"""One frozen settings object for every goldenflow command.

Values come from command-line flags, then ``GOLDENFLOW_*`` environment variables,
then the defaults below. The same worker runs against the embedded broker and a
production Apache Kafka cluster: only these settings change.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "GOLDENFLOW_"
#: The embedded broker (Tansu) holds a fetch for the whole wait even when records
#: arrive meanwhile; with faust's 1.5 s an event could wait that long to be seen
#: (stream/app/fetch_wait.py).
EMBEDDED_FETCH_WAIT_MS = 10


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    # -- Kafka connection ----------------------------------------------------------
    broker_url: str = Field(
        "kafka://127.0.0.1:9092",
        description="Kafka bootstrap servers, e.g. kafka://k1:9092;k2:9092",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism (with SASL_* protocols)"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged)")
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers (TLS)")
    ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    ssl_keyfile: Path | None = Field(None, description="client private key (mutual TLS)")
    fetch_wait_ms: int | None = Field(
        None,
        ge=1,
        le=60_000,
        description="longest the brokers may hold a fetch with no records yet "
        "(default: 10 on the embedded profile, which holds a fetch for all of it; "
        "faust's 1500 otherwise)",
    )
    profile: Literal["production", "embedded"] = Field(
        "production",
        description="'embedded' applies the settings the embedded test broker needs",
    )

    # -- topics ----------------------------------------------------------------------
    app_id: str = Field("goldenflow", description="consumer group and state-topic prefix")
    topic_prefix: str = Field("goldenflow", description="topics are <prefix>.cart, .order, ...")
    partitions: int = Field(8, ge=1, le=1024, description="partition count of every topic")
    replication_factor: int = Field(1, ge=1, le=7, description="replicas of created topics")
    retention_ms: int = Field(7 * 86_400_000, description="retention.ms of created topics")

    # -- the engine --------------------------------------------------------------------
    rules_dir: Path = Field(Path("rules"), description="folder of rule files")
    lateness_ms: int = Field(30_000, ge=0, description="allowed event-time lateness")
    idle_ms: int = Field(
        5_000, ge=100, description="a partition idle this long follows the wall clock"
    )
    max_future_ms: int = Field(
        86_400_000, ge=0, description="events further ahead of the clock are dead-lettered"
    )
    horizon_ms: int = Field(
        7 * 86_400_000, ge=60_000, description="journey state older than this (event time) expires"
    )
    batch_max: int = Field(2_000, ge=1, description="most events handed to the core at once")
    batch_within_ms: int = Field(
        20,
        ge=1,
        description="longest wait to fill a batch (keeps immediate patterns fast; "
        "drain=stream only: a batch drain takes what each fetch brings)",
    )
    drain: Literal["batch", "stream"] = Field(
        "batch",
        description="how events reach the core: whole fetches (batch) or faust's "
        "per-event agent stream (stream); see stream/app/drain.py",
    )

    # -- the worker process -------------------------------------------------------------
    standby_replicas: int = Field(
        1,
        ge=0,
        le=3,
        description="warm copies of each partition's journeys kept by other workers "
        "(faster failover; each copy reads that partition's changelog)",
    )
    web_host: str = Field("127.0.0.1", description="address of /metrics and /health")
    web_port: int = Field(6066, ge=0, le=65535, description="port of /metrics and /health")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    data_dir: Path = Field(Path(".goldenflow"), description="worker data (table stores)")

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and "
                "sasl_password (GOLDENFLOW_SASL_USERNAME, GOLDENFLOW_SASL_PASSWORD)"
            )
        return self

    # -- derived -------------------------------------------------------------------------
    @property
    def fetch_wait(self) -> int | None:
        """The fetch wait the worker's consumer gets: the one set, else
        ``EMBEDDED_FETCH_WAIT_MS`` on the embedded profile, else faust's own (None)."""
        if self.fetch_wait_ms is not None:
            return self.fetch_wait_ms
        return EMBEDDED_FETCH_WAIT_MS if self.profile == "embedded" else None

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    @property
    def input_topics(self) -> dict[str, str]:
        """topic name -> kind, for the four input topics."""
        return {self.topic(kind): kind for kind in ("cart", "checkout", "cashier", "order")}

    @property
    def output_topics(self) -> list[str]:
        return [self.topic(name) for name in ("interventions", "dlq", "outcomes")]

    @property
    def bootstrap_servers(self) -> list[str]:
        hosts = self.broker_url.split("://", 1)[-1]
        return [h.strip() for h in hosts.replace(",", ";").split(";") if h.strip()]

    def kafka_client_options(self) -> dict[str, Any]:
        """Options for aiokafka clients (producer, consumer, admin)."""
        opts: dict[str, object] = {
            "bootstrap_servers": ",".join(self.bootstrap_servers),
            "security_protocol": self.security_protocol,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            ctx = ssl.create_default_context(
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None
            )
            if self.ssl_certfile:
                ctx.load_cert_chain(
                    str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None
                )
            opts["ssl_context"] = ctx
        if self.security_protocol.startswith("SASL"):
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        return opts
