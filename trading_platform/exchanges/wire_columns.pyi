# Types of the compiled module wire_columns.pyx (mypy does not read Cython sources).
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

def wire_columns(items: list[Any], fields: Sequence[tuple[str, pa.DataType]]) -> list[pa.Array]: ...
