"""Input rules of the API contract. Each check appends a UserError naming the field."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from cloudops.domain import DatabaseEngine, EnvironmentType
from cloudops.services.inputs import TaskOptions
from cloudops.services.results import ErrorCode, UserError

DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
INSTANCE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
METADATA_LIMIT = 16 * 1024
TTL_MAX_MINUTES = 10080


class Checker:
    def __init__(self, prefix: Iterable[str] = ("input",)) -> None:
        self.prefix = list(prefix)
        self.errors: list[UserError] = []

    def fail(self, name: str, message: str, code: ErrorCode = ErrorCode.INVALID_INPUT) -> None:
        self.errors.append(UserError([*self.prefix, name], message, code))

    def text(self, name: str, value: str | None, *, max_len: int, required: bool = True) -> None:
        if value is None:
            if required:
                self.fail(name, "is required")
            return
        if not value.strip():
            self.fail(name, "must not be empty or blank")
        elif len(value) > max_len:
            self.fail(name, f"must be at most {max_len} characters (got {len(value)})")
        elif "\x00" in value:
            self.fail(name, "must not contain NUL characters")

    def no_whitespace(self, name: str, value: str | None, *, max_len: int) -> None:
        if value is None:
            return
        if not 1 <= len(value) <= max_len:
            self.fail(name, f"must be 1 to {max_len} characters (got {len(value)})")
        elif any(ch.isspace() for ch in value) or "\x00" in value:
            self.fail(name, "must not contain whitespace")

    def dns_label(self, name: str, value: str) -> None:
        if not DNS_LABEL.fullmatch(value):
            self.fail(
                name,
                "must be a DNS-1123 label: 1 to 63 characters of a-z, 0-9 and '-', "
                "starting and ending with a letter or digit",
            )

    def instance_id(self, name: str, value: str) -> None:
        if not INSTANCE_ID.fullmatch(value):
            self.fail(name, "must be 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-'")

    def one_of(self, name: str, value: str, allowed: Iterable[str]) -> None:
        options = list(allowed)
        if value not in options:
            self.fail(name, f"must be one of {', '.join(options)}")

    def options(self, opts: TaskOptions) -> None:
        if opts.idempotency_key is not None and not 1 <= len(opts.idempotency_key) <= 255:
            self.fail("idempotencyKey", "must be 1 to 255 characters")
        if opts.correlation_id is not None and not 1 <= len(opts.correlation_id) <= 255:
            self.fail("correlationId", "must be 1 to 255 characters")
        if opts.metadata is not None:
            if not isinstance(opts.metadata, dict):
                self.fail("metadata", "must be a JSON object")
            elif len(canonical_json(opts.metadata).encode()) > METADATA_LIMIT:
                self.fail("metadata", f"must be at most {METADATA_LIMIT} bytes of JSON")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_engine(checker: Checker, engine: str) -> None:
    checker.one_of("engine", engine, [e.value for e in DatabaseEngine])


def check_environment_type(checker: Checker, env_type: str) -> None:
    checker.one_of("type", env_type, [e.value for e in EnvironmentType])


def check_email_recipients(checker: Checker, recipients: list[str] | None) -> None:
    if recipients is None:
        return
    if len(recipients) > 50:
        checker.fail("emailRecipients", "must list at most 50 addresses")
    for i, address in enumerate(recipients):
        if len(address) > 254 or not EMAIL.fullmatch(address):
            checker.errors.append(
                UserError(
                    [*checker.prefix, "emailRecipients", str(i)],
                    f"{address[:60]!r} is not an email address",
                )
            )


def check_webhook(checker: Checker, url: str | None) -> None:
    if url is None:
        return
    if len(url) > 2048 or not re.fullmatch(r"https://[^\s/$.?#][^\s]*", url):
        checker.fail("teamsWebhookUrl", "must be an https:// URL of at most 2048 characters")
