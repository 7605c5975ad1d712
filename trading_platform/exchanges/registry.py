"""Exchange name -> module. Adding an exchange: one module in this package plus its YAML entry."""

from __future__ import annotations

import importlib

from trading_platform.config import ExchangeConfig
from trading_platform.exchanges.base import Exchange
from trading_platform.settings import ConfigError


def exchange_class(name: str) -> type[Exchange]:
    try:
        module = importlib.import_module(f"trading_platform.exchanges.{name}")
    except ModuleNotFoundError:
        raise ConfigError(
            f"exchanges.{name}.enabled: no ingestion module trading_platform/exchanges/{name}.py yet; "
            f"set enabled: false for {name}"
        ) from None
    classes = [value for value in vars(module).values()
               if isinstance(value, type) and issubclass(value, Exchange) and value.__module__ == module.__name__]
    if len(classes) != 1:
        raise ConfigError(f"trading_platform.exchanges.{name} must define exactly one Exchange subclass")
    return classes[0]


def exchange_for(config: ExchangeConfig) -> Exchange:
    return exchange_class(config.name)(config)
