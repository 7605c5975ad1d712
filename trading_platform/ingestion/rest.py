"""The REST calls the feeds need (book snapshots, trade-history backfills): a plain bounded GET whose
failures say what the exchange meant, so the runner can be polite.

- 429 (too many requests) and 418 (Binance: IP banned for repeating 429s) are :class:`RateLimited`, with the
  server's ``Retry-After`` when it sent one: wait at least that long, every request of that exchange.
- 403 and 451 (forbidden, unavailable for legal reasons, e.g. a region Binance does not serve) are
  :class:`Refused`: no retry can help, the feed stops with that message.
- Any other 4xx is :class:`Rejected`: this request is wrong for the exchange (asking again the same way
  will not help, asking something else may).
- 5xx, timeouts and network errors are plain ``OSError``: retry with backoff.
"""

from __future__ import annotations

import email.utils
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RestResponse:
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)  # names in lower case


class RestError(OSError):
    def __init__(self, status: int, url: str, body: bytes, retry_after_s: float | None = None) -> None:
        super().__init__(f"HTTP {status} from {url}: {body[:200]!r}")
        self.status = status
        self.url = url
        self.retry_after_s = retry_after_s


class RateLimited(RestError):
    """429 / 418: the exchange asks us to slow down (``retry_after_s`` None: it did not say how long)."""


class Refused(RestError):
    """403 / 451: the exchange will not serve this client; retrying cannot help."""


class Rejected(RestError):
    """Another 4xx: the request itself is refused (bad parameters, unknown symbol, range not served)."""


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def http_get(url: str, timeout_s: float = TIMEOUT_S) -> RestResponse:
    """Body and headers of a 200 response; any other outcome raises (see the module docstring)."""
    request = urllib.request.Request(url, headers={"User-Agent": "trading-platform"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            headers = {name.lower(): value for name, value in response.headers.items()}
            return RestResponse(bytes(response.read()), headers)
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
        retry_after = retry_after_seconds(error.headers.get("Retry-After") if error.headers else None)
        if status in (429, 418):
            raise RateLimited(status, url, body, retry_after) from None
        if status in (403, 451):
            raise Refused(status, url, body) from None
        if 400 <= status < 500:
            raise Rejected(status, url, body) from None
        raise RestError(status, url, body, retry_after) from None
