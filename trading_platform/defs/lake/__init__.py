"""The Parquet lake: the raw datasets the ingestion runs write, and the checks on every batch."""
