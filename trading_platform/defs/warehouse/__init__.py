"""ClickHouse: the tables loaded from the lake exactly once, their checks, and the rebuild job."""
