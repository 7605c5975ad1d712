"""The server's connection class: websockets' ``ServerConnection`` plus an id and a request body.

websockets parses only bodiless HTTP requests (it rejects any ``Content-Length`` other than 0). The
admin API wants ``POST /_replay/faults`` with a JSON body, so before the handshake parser sees the
request, a body is cut off, kept in :attr:`ReplayConnection.request_body`, and its ``Content-Length``
header removed. Once the request head has passed, bytes flow straight to websockets untouched.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
_CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*(\d+)[ \t]*\r\n", re.IGNORECASE | re.MULTILINE)

# Process-wide so ids stay unique across several servers in one test process.
_connection_ids = itertools.count(1)


class ReplayConnection(ServerConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection_id = next(_connection_ids)
        self.request_body = b""
        # Set by the server's process_request: (feed, parsed target) for WebSocket routes.
        self.replay_route: tuple[Any, object] | None = None
        self._head: bytearray | None = bytearray()

    def data_received(self, data: bytes) -> None:
        if self._head is None:
            super().data_received(data)
            return
        self._head += data
        head = self._head
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > MAX_HEAD_BYTES:
                self._release(bytes(head))  # let websockets reject the oversized head
            return
        header_end = end + 4
        match = _CONTENT_LENGTH.search(head, 0, header_end)
        length = int(match.group(1)) if match else 0
        if length == 0 or length > MAX_BODY_BYTES:
            self._release(bytes(head))
            return
        if len(head) < header_end + length:
            return  # wait for the rest of the body
        assert match is not None
        self.request_body = bytes(head[header_end : header_end + length])
        stripped = head[: match.start()] + head[match.end() : header_end] + head[header_end + length :]
        self._release(bytes(stripped))

    def _release(self, data: bytes) -> None:
        self._head = None
        super().data_received(data)

    def eof_received(self) -> None:
        if self._head:
            self._release(bytes(self._head))
        self._head = None
        super().eof_received()

    def abort(self) -> None:
        """Close the TCP connection without a WebSocket close handshake (a network failure)."""
        self.transport.abort()


def json_text_response(ws: ServerConnection, status: int, text: str) -> Response:
    """A plain-HTTP answer with a JSON body (REST endpoints, admin API)."""
    response = ws.respond(status, text)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response
