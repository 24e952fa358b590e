"""Stampede's shared core: settings, record types, metric math, database schema and the CLI."""
