"""The raw datasets are partitioned by exchange in Dagster as in the lake: each ingestion run materializes
its own exchange's partition, so the UI shows every exchange's latest batch and its checks side by side."""

import dagster as dg

from trading_platform.exchanges.registry import SUPPORTED_EXCHANGES

EXCHANGE_PARTITIONS = dg.StaticPartitionsDefinition(list(SUPPORTED_EXCHANGES))
