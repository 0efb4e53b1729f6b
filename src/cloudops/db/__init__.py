"""Persistence: ORM models, the engine and its SQLite tuning, migrations."""
