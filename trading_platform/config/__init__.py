"""Exchange configuration (``exchanges.yaml``): validated once at load, errors name the key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from trading_platform.settings import ConfigError, Settings, describe_validation_error

SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{2,10}-[A-Z0-9]{2,10}$")


class Endpoints(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ws_url: str
    rest_url: str | None = None


class ExchangeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    enabled: bool = True
    channels: list[Literal["trades", "book"]] = Field(default_factory=lambda: ["trades"])  # type: ignore[arg-type]
    book_depth: int = Field(20, ge=1, le=1000, description="levels per side in emitted snapshots")
    book_interval_ms: int = Field(1000, ge=10, le=3_600_000, description="snapshot cadence in exchange time")
    live: Endpoints
    replay: Endpoints
    symbols: list[str] = Field(min_length=1, max_length=1024)

    @field_validator("symbols")
    @classmethod
    def _normalized_symbols(cls, symbols: list[str]) -> list[str]:
        bad = [s for s in symbols if not SYMBOL_PATTERN.match(s)]
        if bad:
            raise ValueError(f"symbols must be upper-case BASE-QUOTE (e.g. BTC-USDT), got {bad}")
        if len(set(symbols)) != len(symbols):
            raise ValueError("symbols must not repeat")
        return symbols

    def endpoints(self, settings: Settings) -> Endpoints:
        if settings.feed_mode == "live":
            return self.live
        fill = {"host": settings.replay_host, "port": settings.replay_port}
        return Endpoints(
            ws_url=self.replay.ws_url.format(**fill),
            rest_url=self.replay.rest_url.format(**fill) if self.replay.rest_url else None,
        )


def _registered_exchange(name: str) -> str:
    """An exchange name must have a class in the registry (one line there adds an exchange)."""
    from trading_platform.exchanges.registry import EXCHANGES  # here: the exchange modules import this module

    if name not in EXCHANGES:
        allowed = [repr(known) for known in EXCHANGES]
        raise ValueError(f"Input should be {', '.join(allowed[:-1])} or {allowed[-1]}")
    return name


def _disjoint_quote_groups(groups: dict[str, list[str]]) -> dict[str, list[str]]:
    seen: dict[str, str] = {}
    for name, quotes in groups.items():
        for quote in quotes:
            if quote in seen:
                raise ValueError(f"quote {quote!r} is in two composite_quotes groups ({seen[quote]!r} and {name!r})")
            seen[quote] = name
    return groups


class ExchangesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    exchanges: dict[Annotated[str, AfterValidator(_registered_exchange)], ExchangeConfig]
    # Composite price: quote currencies priced together across exchanges, by group name (e.g. USD: [USD,
    # USDC]). A quote in no group is priced on its own, so USDT and USD never mix unless a group says so.
    composite_quotes: Annotated[dict[str, list[str]], AfterValidator(_disjoint_quote_groups)] = Field(
        default_factory=dict)

    def quote_group(self, quote: str) -> str:
        """The composite group a quote currency is priced in (its own name when no group lists it)."""
        return next((name for name, quotes in self.composite_quotes.items() if quote in quotes), quote)

    @property
    def enabled(self) -> dict[str, ExchangeConfig]:
        return {name: cfg for name, cfg in self.exchanges.items() if cfg.enabled}


def load_exchanges(path: Path) -> ExchangesFile:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"exchanges config not found: {path} (set TP_EXCHANGES_FILE)") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from None
    try:
        parsed = ExchangesFile.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, str(path))) from None
    for name, cfg in parsed.exchanges.items():
        cfg.name = name
    return parsed
