"""Persistence: the event store (SQLAlchemy; SQLite or PostgreSQL) and event sinks."""
