"""Task events: the record that is stored and broadcast, and the fan-out hub."""
