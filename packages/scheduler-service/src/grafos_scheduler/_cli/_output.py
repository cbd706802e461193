"""How commands print: a table (or key: value lines) for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

__all__ = ["as_dict", "print_json", "print_record", "print_table"]


def as_dict(value: Any) -> dict[str, Any]:
    """An attrs model of the API as plain JSON-ready data."""
    data: dict[str, Any] = attrs.asdict(value, recurse=True)
    return data


def print_json(value: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
    print(json.dumps(value, sort_keys=False))


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], empty: str) -> None:
    """Aligned columns with a header; ``empty`` in parentheses when there are no rows."""
    table = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in table)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    if not rows:
        print(f"({empty})")


def print_record(record: Mapping[str, Any]) -> None:
    """One object as ``key: value`` lines, nested objects indented."""
    width = max((len(k) for k in record), default=0)
    for key, value in record.items():
        if isinstance(value, Mapping):
            print(f"{key}:")
            inner = max((len(k) for k in value), default=0)
            for k, v in value.items():
                print(f"  {k.ljust(inner)}  {_cell(v)}")
        else:
            print(f"{key.ljust(width)}  {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)
