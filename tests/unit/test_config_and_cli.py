from __future__ import annotations

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from stream.cli import main
from stream.config import Settings


def test_settings_come_from_env_and_are_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLDENFLOW_BROKER_URL", "kafka://k1:9093;k2:9093")
    monkeypatch.setenv("GOLDENFLOW_PARTITIONS", "12")
    s = Settings()
    assert s.bootstrap_servers == ["k1:9093", "k2:9093"]
    assert s.partitions == 12
    assert s.topic("cart") == "goldenflow.cart"
    with pytest.raises(ValidationError):
        s.partitions = 3  # type: ignore[misc]


def test_sasl_needs_credentials_and_hides_the_password() -> None:
    with pytest.raises(ValidationError, match="needs sasl_username"):
        Settings(security_protocol="SASL_SSL")
    s = Settings(security_protocol="SASL_PLAINTEXT", sasl_username="svc", sasl_password="hunter2")
    assert "hunter2" not in repr(s)
    assert "hunter2" not in str(s.model_dump())
    opts = s.kafka_client_options()
    assert opts["sasl_plain_password"] == "hunter2"
    assert opts["security_protocol"] == "SASL_PLAINTEXT"


def test_help_lists_the_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("broker", "worker", "demo"):
        assert command in result.output


@pytest.mark.parametrize("command", ["broker", "worker", "demo"])
def test_every_option_shows_its_env_var(command: str) -> None:
    import click

    cmd = main.commands[command]  # type: ignore[attr-defined]
    result = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    options = [p for p in cmd.params if isinstance(p, click.Option) and p.name != "help"]
    assert options
    for option in options:
        assert option.envvar and option.show_envvar, option.name
        assert f"env var: {option.envvar}" in " ".join(result.output.split()), option.name


def test_worker_help_never_shows_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOLDENFLOW_SASL_PASSWORD", "s3cr3t-value")
    result = CliRunner().invoke(main, ["worker", "--help"], terminal_width=200)
    assert "GOLDENFLOW_SASL_PASSWORD" in result.output
    assert "s3cr3t-value" not in result.output


def test_worker_refuses_invalid_settings_clearly() -> None:
    result = CliRunner().invoke(main, ["worker", "--partitions", "0"])
    assert result.exit_code != 0
    assert "partitions" in result.output
