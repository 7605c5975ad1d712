"""Process-wide settings of an ingestion run, made once at its start, before it builds its exchange.

An ingestion run is a long-lived process of its own (Dagster's run worker), so what is set here holds for that
run alone. It is memory, not behaviour: the rows, books and events a run writes are the same either way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.abc
import importlib.machinery
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

import pyarrow as pa

log = logging.getLogger(__name__)
_PR_SET_THP_DISABLE = 41  # linux/prctl.h


def prepare_ingestion_process() -> None:
    """Call first thing in an ingestion run's process (the Dagster op does; so does the end-to-end benchmark)."""
    _no_transparent_huge_pages()
    _pyarrow_system_pool()
    _pyarrow_without_pandas_probe()


def _no_transparent_huge_pages() -> None:
    """No transparent huge pages for this process. pyarrow's mimalloc asks for them on its arena (madvise), so
    each thread that touched Arrow memory held whole 2 MiB pages: ~30 MB resident for ~1 MB allocated. The
    run's allocations are small and short-lived; 4 KiB pages cost it nothing measurable. Linux only (prctl);
    elsewhere, or if the kernel refuses, the run goes on as it is."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.prctl(_PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0:
        log.info("transparent huge pages stay on for this run (prctl errno %d)", ctypes.get_errno())


def _pyarrow_system_pool() -> None:
    """Arrow buffers that pyarrow allocates (every ``pa.array``, cast, concat of a tick and a batch) from malloc
    instead of the mimalloc pool: malloc hands a batch's large freed buffers back to the OS, mimalloc keeps
    freed pages in the arena of the thread that used them (the flush runs on pool threads in turn). Measured
    with huge pages off and pandas not imported: 278 MB peak instead of 283-288 at 20k msgs/s, 284-315
    instead of 308-348 at 50k. Arrow's C++ internals (Parquet encode, compression) keep the C++ default
    pool, which pyarrow picks at its import, before a run can choose."""
    pa.set_memory_pool(pa.system_memory_pool())


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname == "pandas":
            raise ModuleNotFoundError("pandas is not probed by an ingestion run", name=fullname)
        return None


def _pyarrow_without_pandas_probe() -> None:
    """Let pyarrow's one-time "is pandas importable?" probe answer no, so the run never imports pandas (~50 MB).

    ``pa.array`` of a Python list (every decode builds columns that way) first asks whether the list is a pandas
    object, and to know, pyarrow imports pandas once per process. pandas must stay installed (chdb needs it),
    and an ingestion run never hands pandas objects to pyarrow, so the probe's answer changes nothing here. It
    only decides that one check: an explicit conversion (``Table.to_pandas``) still imports pandas when called.
    A process that imported pandas already (or whose pyarrow probed already) is left as it is.
    """
    if "pandas" in sys.modules:
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)  # at process start: no other thread is importing pandas meanwhile
    try:
        pa.array([])  # the probe runs (once) here, and remembers its answer
    finally:
        sys.meta_path.remove(finder)
