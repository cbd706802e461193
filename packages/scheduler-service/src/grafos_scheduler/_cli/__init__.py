"""The command line: serve, demo, audit, leases. The top layer."""
