"""The embedded defaults of ``make run`` (``trading-platform dev``): the launcher and the services it owns."""
