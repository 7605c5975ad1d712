# Types of the compiled module wire_columns.pyx (mypy does not read Cython sources).
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

class _Marker: ...

class _Trades(_Marker):
    def __call__(self, **constants: str) -> _Trades: ...

SEQUENCE: _Marker
TRADES: _Trades
TRADE: _Trades

class FrameShape:
    numbered: bool
    lax: bool
    trade_fields: tuple[tuple[str, pa.DataType], ...]
    def __init__(self, layout: Any, trade_fields: Sequence[tuple[str, pa.DataType]],
                 choices: Mapping[str, Sequence[str]] | None = None, *, lax: bool = False) -> None: ...

class WireColumns:
    def __init__(self, fields: Sequence[tuple[str, pa.DataType]]) -> None: ...
    def __len__(self) -> int: ...
    def extend(self, items: list[Any], frames: Sequence[int]) -> None: ...
    def take(self) -> tuple[list[pa.Array], pa.Array]: ...
    def scan(self, shape: FrameShape, frames: list[bytes], lo: int, hi: int, first_sequence: int = -1) -> int: ...

def wire_columns(items: list[Any], fields: Sequence[tuple[str, pa.DataType]]) -> list[pa.Array]: ...
