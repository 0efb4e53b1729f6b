"""The text frames the server writes itself are the ones websockets would write."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from cloudops.web.websocket_protocol import text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_text_frame_is_the_librarys_unmasked_final_text_frame(size: int) -> None:
    payload = bytes(ord("a") + i % 26 for i in range(size))
    expected = Frame(Opcode.TEXT, payload, fin=True).serialize(mask=False, extensions=[])
    assert text_frame(payload) == expected
