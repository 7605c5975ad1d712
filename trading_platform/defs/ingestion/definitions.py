"""The ingestion domain's definitions: a job and its supervisor per enabled exchange."""

import dagster as dg

from trading_platform.defs.ingestion.jobs import build_ingestion_job
from trading_platform.defs.ingestion.sensors import build_supervisor


def ingestion_definitions(enabled: list[str]) -> dg.Definitions:
    jobs = {name: build_ingestion_job(name) for name in enabled}
    return dg.Definitions(jobs=list(jobs.values()), sensors=[build_supervisor(job, name) for name, job in jobs.items()])
