"""Redis: the latest-prices cache the loads repair from ClickHouse, and its checks."""
