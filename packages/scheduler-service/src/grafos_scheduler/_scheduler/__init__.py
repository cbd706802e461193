"""The scheduler: use cases, the executor, restart recovery; the one commit point."""
