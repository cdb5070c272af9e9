"""`python -m tmeter`: the `tmeter` command line (tmeter/cli.py)."""

import sys

from tmeter.cli import main

sys.exit(main())
