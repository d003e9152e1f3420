"""What every bin/ script does: run one lamina command from this checkout.
The checkout's runtime/ and convert/ packages come first on the path; the
compiled core comes from $LAMINA_NATIVE_DIR or the pip-installed lamina
(runtime/native.py)."""
import importlib
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def launch(module: str) -> None:
    sys.path.insert(0, ROOT)
    sys.exit(importlib.import_module(module).main())
