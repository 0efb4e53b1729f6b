"""uvicorn's WebSocket protocol, able to write text frames synchronously.

Live task events reach a thousand subscribers from the hub's own turn of the event loop
(graphql/live_outlet.py) rather than through an awaitable ASGI ``send`` per subscriber,
each behind its own task. The protocol object offers that write in the ASGI scope's
extensions, where an application finds it; a server without it gets the ordinary path.
With no extension negotiated (permessage-deflate is off by default), a text frame's
header is written here rather than by websockets' ``send_text``: the library has no
cheaper call for a message it is not to look at, and its state machine and frame object
per subscriber were a quarter of the fan-out's CPU. ``text_frame`` is checked against the
library's own serializer in the tests.
"""

from __future__ import annotations

import struct
from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import State

from cloudops.graphql.live_outlet import FRAME_WRITER


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked text frame with no extension (RFC 6455, section 5.2): what a
    server's ``send_text`` writes when no extension was negotiated."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


class CloudOpsWebSocketProtocol(WebSocketsSansIOProtocol):
    """What ``cloudops serve`` runs WebSockets with (``uvicorn.Config(ws=...)``); a
    ``FrameWriter`` (graphql/live_outlet.py)."""

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        extensions = cast(dict[str, Any], self.scope["extensions"])
        extensions[FRAME_WRITER] = {"writer": self}

    def write_texts(self, texts: list[bytes]) -> list[int] | None:
        # The same steps as the ASGI "websocket.send" of the base class, minus its await
        # for a writable transport (a peer that is behind shows in unsent_bytes instead),
        # and with the frames joined into one write.
        if (
            not self.handshake_complete
            or self.initial_response is not None
            or self.close_sent
            or self.disconnected
            or self.transport.is_closing()
        ):
            return None
        conn = self.conn
        if conn.state is State.OPEN and not conn.extensions and not conn.expect_continuation_frame:
            # What conn.send_text would write, without its state machine and frame objects
            # per subscriber (a quarter of the fan-out's CPU): with no extension, a
            # server's text frame is its header and the payload as is. Anything the
            # connection still holds (a pong, say) goes first, as it would have.
            frames = [text_frame(text) for text in texts]
            self.transport.write(b"".join((*conn.data_to_send(), *frames)))
            return [len(frame) for frame in frames]
        frames = []
        try:
            for text in texts:
                conn.send_text(text)
                frames.append(b"".join(conn.data_to_send()))
        except InvalidState:
            return None
        self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        return [len(frame) for frame in frames]

    def unsent_bytes(self) -> int:
        return self.transport.get_write_buffer_size()
