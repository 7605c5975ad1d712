"""The process-wide settings of an ingestion run, each checked in a fresh interpreter (they hold per process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from trading_platform_tests.conftest import CONFIG_FILE

# What a run does first: prepare the process, build its exchange (its symbol columns are pa.array of lists),
# decode a trade frame into a table.
_RUN_START = f"""
import sys
from pathlib import Path
import pyarrow as pa
from trading_platform.ingestion.process import prepare_ingestion_process
prepare_ingestion_process()
from trading_platform.config import load_exchanges
from trading_platform.exchanges.registry import exchange_for
exchange = exchange_for(load_exchanges(Path({str(CONFIG_FILE)!r})).exchanges["binance"])
trades = pa.table({{"symbol": ["BTC-USDT"], "price": [1.5]}})
"""


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(_RUN_START + code)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_prepared_run_builds_its_arrow_columns_without_importing_pandas() -> None:
    assert _python('print("pandas" in sys.modules)') == "False"


def test_a_prepared_run_still_converts_to_pandas_when_asked_explicitly() -> None:
    assert _python('print(type(trades.to_pandas()).__name__, trades.to_pandas()["price"].tolist())') == \
        "DataFrame [1.5]"


def test_a_prepared_run_allocates_arrow_buffers_with_malloc() -> None:
    assert _python("print(pa.default_memory_pool().backend_name, pa.system_memory_pool().bytes_allocated() > 0)") \
        == "system True"


def test_a_prepared_run_has_no_transparent_huge_pages() -> None:
    # prctl is Linux's, as is every machine this project installs on (make's apt step, the Debian services).
    assert _python("import ctypes, ctypes.util; print(ctypes.CDLL(ctypes.util.find_library('c')).prctl(42, 0, 0, 0, 0))"
                   ) == "1"  # PR_GET_THP_DISABLE


@pytest.mark.slow  # imports the definitions in a fresh interpreter: ~5 s: make test runs it, make test-fast does not
def test_importing_the_definitions_leaves_pandas_out() -> None:
    """A Dagster run worker imports every definition before the ingestion op prepares its process: a module that
    made an Arrow value from Python objects at import would run pyarrow's pandas probe, and pandas would be in
    every run whatever the op does."""
    done = subprocess.run([sys.executable, "-c", "import sys, trading_platform.definitions; "
                                                 "print('pandas' in sys.modules)"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
