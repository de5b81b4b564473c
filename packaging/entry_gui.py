"""Frozen entry point of the `emclassify-gui` desktop program."""
import sys

import torch  # noqa: F401  - torch before PySide6: known DLL-order issue on Windows

from emclassify_gui.app import main

if __name__ == "__main__":
    sys.exit(main())
