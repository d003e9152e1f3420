"""Helpers shared by the tests (oracles, builders, fixtures' data); pytest
puts tests/ on the path (pyproject.toml), so they import as `support.NAME`."""
