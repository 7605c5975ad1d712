"""The one REST call the feeds need (order-book snapshots): a plain bounded GET."""

from __future__ import annotations

import urllib.error
import urllib.request

TIMEOUT_S = 10.0


def http_get(url: str, timeout_s: float = TIMEOUT_S) -> bytes:
    """Body of a 200 response; any other outcome raises OSError with the status and URL."""
    request = urllib.request.Request(url, headers={"User-Agent": "trading-platform"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        raise OSError(f"HTTP {error.code} from {url}: {error.read()[:200]!r}") from None
