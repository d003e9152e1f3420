"""What every bin/ script does: `bin/NAME ARGS` is `lamina NAME ARGS`, for a
checkout installed with `pip install -e .` (the lamina package and its
compiled core come from that install, runtime/native.py)."""

import sys


def launch(subcommand: str) -> None:
    try:
        from lamina.cli.main import main
    except ImportError as e:
        sys.exit(f"bin/{subcommand}: the lamina package is not installed ({e}); run `pip install -e .` here first")
    sys.exit(main([subcommand, *sys.argv[1:]]))
