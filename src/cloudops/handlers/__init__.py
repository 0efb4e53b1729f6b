"""Task handlers: one module per task type, a plan of named idempotent steps each."""
