"""Bad settings and bad YAML stop the start with the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from trading_platform.config import load_exchanges
from trading_platform.settings import ConfigError, load_settings
from trading_platform_tests.conftest import CONFIG_FILE


def test_defaults_put_everything_under_the_state_dir(tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path)
    assert settings.storage_url == (tmp_path / "lake").as_uri()
    assert settings.clickhouse_url == f"chdb://{tmp_path / 'chdb'}"
    assert settings.resolved_redis_url.startswith("redis://127.0.0.1:")


def test_a_bad_feed_mode_names_the_variable_and_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TP_FEED_MODE", "paper")
    with pytest.raises(ConfigError, match=r"TP_FEED_MODE: Input should be 'replay' or 'live'.*'paper'"):
        load_settings()


def test_a_bad_storage_url_names_the_allowed_schemes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TP_STORAGE_URL", "gs://bucket")
    with pytest.raises(ConfigError, match=r"TP_STORAGE_URL: .*file:// or s3://"):
        load_settings()


def test_a_non_numeric_batch_size_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TP_BATCH_MAX_ROWS", "lots")
    with pytest.raises(ConfigError, match="TP_BATCH_MAX_ROWS"):
        load_settings()


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exchanges.yaml"
    path.write_text(text)
    return path


def test_the_shipped_config_has_three_exchanges_of_twenty_symbols() -> None:
    config = load_exchanges(CONFIG_FILE)
    assert sorted(config.exchanges) == ["binance", "coinbase", "kraken"]
    assert all(len(c.symbols) == 20 for c in config.exchanges.values())


def test_an_unknown_exchange_names_the_allowed_ones(tmp_path: Path) -> None:
    text = CONFIG_FILE.read_text().replace("  kraken:", "  krakenn:")
    with pytest.raises(ConfigError, match=r"exchanges\.krakenn.*'binance', 'coinbase' or 'kraken'"):
        load_exchanges(write_yaml(tmp_path, text))


def test_a_badly_spelled_symbol_is_named(tmp_path: Path) -> None:
    text = CONFIG_FILE.read_text().replace("BTC-USDT,", "btcusdt,", 1)
    with pytest.raises(ConfigError, match=r"exchanges\.binance\.symbols.*BASE-QUOTE.*btcusdt"):
        load_exchanges(write_yaml(tmp_path, text))


def test_an_unknown_channel_names_the_allowed_ones(tmp_path: Path) -> None:
    text = CONFIG_FILE.read_text().replace("channels: [trades, book]", "channels: [tradez, book]", 1)
    with pytest.raises(ConfigError, match=r"exchanges\.binance\.channels\.0.*'trades' or 'book'"):
        load_exchanges(write_yaml(tmp_path, text))


def test_broken_yaml_is_reported_as_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_exchanges(write_yaml(tmp_path, "exchanges: [unclosed"))


def test_a_quote_in_two_composite_groups_is_named(tmp_path: Path) -> None:
    text = CONFIG_FILE.read_text().replace("  USD: [USD, USDC]", "  USD: [USD, USDC]\n  STABLE: [USDT, USDC]")
    with pytest.raises(ConfigError, match=r"composite_quotes.*'USDC' is in two composite_quotes groups"):
        load_exchanges(write_yaml(tmp_path, text))
