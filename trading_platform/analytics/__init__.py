"""Analytics computed in ClickHouse from the loaded trades: candles first."""
