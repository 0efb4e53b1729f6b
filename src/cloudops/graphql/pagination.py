"""Opaque cursors for keyset pagination: base64 of the sort key of the last row."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from graphql import GraphQLError

MAX_PAGE = 200


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor.encode()).decode()
        stamp, row_id = raw.split("|", 1)
        return datetime.fromisoformat(stamp), row_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise GraphQLError(
            "after: not a cursor returned by this API",
            extensions={"code": "INVALID_INPUT", "field": ["after"]},
        ) from None


def page_size(first: int | None) -> int:
    size = 20 if first is None else first
    if not 0 <= size <= MAX_PAGE:
        raise GraphQLError(
            f"first: must be between 0 and {MAX_PAGE}",
            extensions={"code": "INVALID_INPUT", "field": ["first"]},
        )
    return size
