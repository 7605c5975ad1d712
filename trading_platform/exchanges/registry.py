"""Exchange name -> its class. Adding an exchange: one module in this package, its YAML block in
``config/exchanges.yaml`` and one line in ``EXCHANGES``.

An explicit table rather than importing ``trading_platform.exchanges.<name>`` and inspecting it: what is
supported is readable in one place, and a legacy archive decoder or helper class in a module can never be
mistaken for the live exchange.
"""

from __future__ import annotations

from trading_platform.config import ExchangeConfig
from trading_platform.exchanges.base import Exchange
from trading_platform.exchanges.binance import Binance
from trading_platform.exchanges.coinbase import Coinbase
from trading_platform.exchanges.kraken import Kraken
from trading_platform.settings import ConfigError

EXCHANGES: dict[str, type[Exchange]] = {"binance": Binance, "coinbase": Coinbase, "kraken": Kraken}

# The exchanges with an ingestion module; exchanges.yaml enables a subset of them. Fixed at import: the
# Dagster partitions are built from it.
SUPPORTED_EXCHANGES = tuple(EXCHANGES)


def exchange_class(name: str) -> type[Exchange]:
    try:
        return EXCHANGES[name]
    except KeyError:
        raise ConfigError(
            f"exchanges.{name}.enabled: no ingestion module trading_platform/exchanges/{name}.py yet; "
            f"set enabled: false for {name}"
        ) from None


def exchange_for(config: ExchangeConfig) -> Exchange:
    return exchange_class(config.name)(config)
