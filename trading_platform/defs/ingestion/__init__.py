"""The long-running ingestion runs (one job per exchange) and the sensors that keep them alive."""
