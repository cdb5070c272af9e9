"""Command groups of the `tmeter` CLI, one module each (see tmeter/cli.py)."""
