"""Pipeline stages that move data between the stores: lake -> ClickHouse, ClickHouse -> Redis."""
