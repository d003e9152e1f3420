"""How every lamina command fails: one clear line on stderr and a non-zero
exit, never a traceback, for everything a user can cause (a bad file, a bad
argument, a missing model, Ctrl-C, a closed pipe)."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

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
                sys.stdout = None
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


def checked(validate: Callable[..., Any], *args: Any) -> Callable[[str], Any]:
    """An argparse `type=` from a lamina.options validator: argparse then says
    "argument --temp: temperature must be a finite number, got 'nan'"."""

    def parse(text: str) -> Any:
        try:
            return validate(text, *args)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse.__name__ = getattr(validate, "__name__", "value")
    return parse
