"""Command-line options shared by the ``goldenflow`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def env_option(
    flag: str, envvar: str, default: Any, help: str, *, dest: str | None = None, **kwargs: Any
) -> Any:
    """A ``--flag`` backed by an environment variable, both shown in --help.

    ``dest`` names the parameter when it differs from the flag; the default is shown
    unless it is None or ``show_default`` says otherwise.
    """
    kwargs.setdefault("show_default", default is not None)
    decls = [flag] if dest is None else [flag, dest]
    return click.option(
        *decls, default=default, envvar=envvar, show_envvar=True, help=help, **kwargs
    )


def rules_option(help: str = "folder of rule files") -> Any:
    """``--rules``: the folder of rule files (``GOLDENFLOW_RULES_DIR``)."""
    return env_option(
        "--rules",
        "GOLDENFLOW_RULES_DIR",
        Path("rules"),
        help,
        dest="rules_dir",
        type=click.Path(path_type=Path),
    )
