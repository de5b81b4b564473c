"""Frozen entry point of the `emclassify` command-line program."""
import sys

from emclassify.cli import main

if __name__ == "__main__":
    sys.exit(main())
