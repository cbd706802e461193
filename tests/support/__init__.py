"""Shared pieces for the scheduler's tests: factories, pipeline stages, a few private names.

`pythonpath = ["tests"]` (root pyproject.toml) makes this importable as ``support``; the
`wheels` nox session copies it out of the tree with tests/scheduler.
"""
