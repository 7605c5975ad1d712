"""Client-side order books, kept the way a consumer of each protocol keeps them (by the docs)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from decimal import Decimal
from typing import Any

from trading_platform.replay.book import kraken_checksum


class ClientBook:
    """Price → (price text, qty text) per side; a zero quantity removes the level."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, tuple[str, str]] = {}
        self.asks: dict[Decimal, tuple[str, str]] = {}

    def set(self, is_bid: bool, price: str, qty: str) -> None:
        levels = self.bids if is_bid else self.asks
        if Decimal(qty) == 0:
            levels.pop(Decimal(price), None)
        else:
            levels[Decimal(price)] = (price, qty)

    def side(self, is_bid: bool) -> list[tuple[str, str]]:
        """Levels best first."""
        levels = self.bids if is_bid else self.asks
        return [levels[p] for p in sorted(levels, reverse=is_bid)]

    def truncate(self, depth: int) -> None:
        for is_bid in (True, False):
            levels = self.bids if is_bid else self.asks
            for price in sorted(levels, reverse=is_bid)[depth:]:
                del levels[price]

    def checksum(self) -> int:
        return kraken_checksum(self.side(False)[:10], self.side(True)[:10])

    def crossed(self) -> bool:
        return bool(self.bids and self.asks and max(self.bids) >= min(self.asks))


def http_get(url: str) -> tuple[int, Any]:
    """(status, body) of a GET, including error statuses; the body parsed when it is JSON."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()
