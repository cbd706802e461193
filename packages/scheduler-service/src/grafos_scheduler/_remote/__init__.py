"""The remote side: the HTTP client and the worker agent. Loads no server code."""
