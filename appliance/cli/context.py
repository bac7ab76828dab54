"""What every `fieldbox` subcommand is handed: the config path, and the config loaded once."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import msgspec

from appliance.config import ConfigError, FieldboxConfig, load_config


class Context:
    """What every subcommand gets: the config path, loaded on first use."""

    def __init__(self, config_path: Path | None) -> None:
        self.config_path = config_path
        self.log_format: str | None = None  # `serve --log-format`, over `[log] format`
        self._cfg: FieldboxConfig | None = None

    @property
    def cfg(self) -> FieldboxConfig:
        """The loaded config; exits with the problems listed if it is invalid."""
        if self._cfg is None:
            try:
                cfg = load_config(self.config_path)
            except ConfigError as exc:
                click.echo(str(exc), err=True)
                sys.exit(2)
            if self.log_format is not None:
                log = msgspec.structs.replace(cfg.log, format=self.log_format)
                cfg = msgspec.structs.replace(cfg, log=log)
            self._cfg = cfg
        return self._cfg


pass_ctx = click.make_pass_decorator(Context)


pass_ctx = click.make_pass_decorator(Context)
"""Hands a command the `Context` the root group made."""
