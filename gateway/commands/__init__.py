"""Command modules of the `tmeter` CLI (see gateway.cli)."""
