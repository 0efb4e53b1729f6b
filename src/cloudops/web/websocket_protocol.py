"""uvicorn's WebSocket protocol, able to write text frames synchronously.

Live task events reach a thousand subscribers from the hub's own turn of the event loop
(graphql/live_outlet.py) rather than through an awaitable ASGI ``send`` per subscriber,
each behind its own task. The protocol object offers that write in the ASGI scope's
extensions, where an application finds it; a server without it gets the ordinary path.
"""

from __future__ import annotations

from typing import Any, cast

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from cloudops.graphql.live_outlet import FRAME_WRITER


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
        frames = []
        try:
            for text in texts:
                self.conn.send_text(text)
                frames.append(b"".join(self.conn.data_to_send()))
        except InvalidState:
            return None
        self.transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
        return [len(frame) for frame in frames]

    def unsent_bytes(self) -> int:
        return self.transport.get_write_buffer_size()
