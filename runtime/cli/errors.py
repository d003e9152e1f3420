"""How every lamina command fails: one clear line on stderr and a non-zero
exit, never a traceback, for everything a user can cause (a bad file, a bad
argument, a missing model, Ctrl-C, a closed pipe)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable

from lamina.errors import LaminaError


def one_line_errors(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    def wrap(body: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(body)
        def main(*args, **kwargs) -> int:
            try:
                return body(*args, **kwargs)
            except KeyboardInterrupt:
                print(f"\n{prog}: interrupted", file=sys.stderr)
                return 130
            except BrokenPipeError:
                # `cmd | head`: the reader left; say nothing, skip the flush at exit
                sys.stdout = None  # type: ignore[assignment]
                return 1
            except (LaminaError, ValueError) as e:
                print(f"{prog}: error: {e}", file=sys.stderr)
                return 1
            except OSError as e:
                where = f"{e.filename}: " if getattr(e, "filename", None) else ""
                print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
                return 1

        return main

    return wrap
