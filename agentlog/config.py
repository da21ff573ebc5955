"""Where things are and which models to use: flags, then environment, then the config file.

The config file (TOML, ``$AGENTLOG_CONFIG`` or ``~/.config/agentlog/config.toml``) may set
``model``, ``base_url``, ``db``, ``timeout``, ``[agents.NAME]`` tables with ``model``
and ``temperature``, and ``[prices."MODEL"]`` tables with ``input`` and ``output`` (USD per
million tokens) for models the default price table lacks. API keys are read from ``OPENAI_API_KEY`` only, never from files
agentlog writes.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import msgspec

from .models.prices import Price, PriceTable


class ConfigError(ValueError):
    pass


class AgentDefaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str | None = None
    temperature: float | None = None


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str | None = None
    base_url: str | None = None
    db: str | None = None
    timeout: float = 120.0
    agents: dict[str, AgentDefaults] = {}
    prices: dict[str, Price] = {}

    def price_table(self) -> PriceTable:
        return PriceTable(self.prices)


def config_path() -> Path:
    if env := os.environ.get("AGENTLOG_CONFIG"):
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "agentlog" / "config.toml"


def load_config(path: Path | None = None) -> Config:
    path = path or config_path()
    if not path.exists():
        return Config()
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text())
        prices = raw.get("prices")
        for model, entry in prices.items() if isinstance(prices, dict) else ():
            try:
                msgspec.convert(entry, Price)
            except msgspec.ValidationError as exc:  # name the entry: a table key is not in msgspec's path
                raise ConfigError(f"config file {path}: [prices.{model!r}]: {exc}") from None
        return msgspec.convert(raw, Config)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from exc


def default_db(config: Config | None = None) -> str:
    """The log when ``--db`` is not given: ``$AGENTLOG_DB``, the config file's ``db``, or a file
    in the user's data directory. A path or a URL (``agentlog.store.open_store`` tells them apart)."""
    if env := os.environ.get("AGENTLOG_DB"):
        return env
    if config is not None and config.db:
        return config.db
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return str(base / "agentlog" / "agentlog.db")
