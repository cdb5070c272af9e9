"""Market clearing (placeholder docstring, replaced below)."""
