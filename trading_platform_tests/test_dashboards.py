"""The Grafana dashboards' SQL runs against the platform's schema and analytics (dashboards/check_queries.py,
in a process of its own: it opens a chdb folder of its own)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def test_every_dashboard_query_runs_and_returns_rows() -> None:
    done = subprocess.run([sys.executable, "dashboards/check_queries.py"], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "all dashboard queries ran against the schema" in done.stdout
