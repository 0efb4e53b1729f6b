"""A bad setting stops the start with one line that names the variable."""

from __future__ import annotations

import pytest

from cloudops.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CLOUDOPS_PORT", "http"),
        ("CLOUDOPS_PORT", "70000"),
        ("CLOUDOPS_BUS", "kafka"),
        ("CLOUDOPS_WORKER_CONCURRENCY", "0"),
        ("CLOUDOPS_STEP_DELAY", "-1"),
        ("CLOUDOPS_DATABASE_URL", "mysql://x"),
        ("CLOUDOPS_BROADCAST_URL", "kafka://x"),
        ("CLOUDOPS_LOG_LEVEL", "LOUD"),
        ("CLOUDOPS_NOTIFICATIONS", "pager"),
        ("CLOUDOPS_SMTP_URL", "mail.example.com:25"),
    ],
)
def test_bad_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as info:
        load_settings(_env_file=None)
    message = str(info.value)
    assert message.startswith(variable + ":")
    assert "\n" not in message


def test_defaults_are_the_embedded_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLOUDOPS_DATABASE_URL", "CLOUDOPS_BUS", "CLOUDOPS_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(_env_file=None)
    assert settings.database_url == "sqlite+aiosqlite:///data/cloudops.db"
    assert settings.bus.value == "memory" and settings.broadcast_url == "memory://"
    assert settings.port == 5056 and settings.worker_concurrency == 8
