"""The client and agent talk to a real server: the fixtures of tests/support/servers.py."""

from support.servers import admin, alice, app, client, headers, scheduler, server, tokens

__all__ = ["admin", "alice", "app", "client", "headers", "scheduler", "server", "tokens"]
