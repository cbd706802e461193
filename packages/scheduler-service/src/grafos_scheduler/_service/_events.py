"""The service's structured log: one event per decision, on ``grafos_scheduler.http``."""

from __future__ import annotations

import logging

__all__ = ["event", "logger"]

logger = logging.getLogger("grafos_scheduler.http")


def event(name: str, *, level: int = logging.INFO, **fields: object) -> None:
    """Log ``name`` at ``level``; ``fields`` land on the record as extras (``event`` too)."""
    logger.log(level, name, extra={"event": name, **fields})
