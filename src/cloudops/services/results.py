"""Errors as values at the API edge: every refused request says which field and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

T = TypeVar("T")


class ErrorCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    FORBIDDEN = "FORBIDDEN"
    NOT_RETRYABLE = "NOT_RETRYABLE"
    NOT_CANCELLABLE = "NOT_CANCELLABLE"


@dataclass(frozen=True, slots=True)
class UserError:
    field: list[str]
    message: str
    code: ErrorCode = ErrorCode.INVALID_INPUT


@dataclass(slots=True)
class Result(Generic[T]):
    value: T | None = None
    user_errors: list[UserError] = field(default_factory=list)
    deduplicated: bool = False

    @property
    def ok(self) -> bool:
        return not self.user_errors

    @classmethod
    def refused(cls, *errors: UserError) -> Result[T]:
        return cls(None, list(errors))
