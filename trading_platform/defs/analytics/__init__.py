"""Analytics computed from the warehouse: candles per day."""
