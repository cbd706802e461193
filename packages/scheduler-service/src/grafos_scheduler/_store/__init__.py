"""Persistence: the store protocol and the SQLite store."""
