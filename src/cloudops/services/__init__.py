"""Service layer: what the GraphQL mutations call. Validates, writes, then schedules."""
