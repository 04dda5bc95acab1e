"""`python -m xenlab.cli`: what the runner starts for each board's health gate."""

import sys

from .parser import main

if __name__ == "__main__":
    sys.exit(main())
