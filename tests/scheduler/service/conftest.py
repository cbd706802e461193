"""The service's fixtures (tests/support/servers.py): a real scheduler, app and server."""

from support.servers import admin, alice, app, client, headers, scheduler, server, tokens

__all__ = ["admin", "alice", "app", "client", "headers", "scheduler", "server", "tokens"]
