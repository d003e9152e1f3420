"""A test module's in-process Llama on a cached model, opened once and closed
after the module: the reference a server's answers are compared against, or
the model end-to-end tests run on.

    llm = llama_fixture("smollm2-135m-instruct", n_ctx=512)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


def llama_fixture(model: str, n_ctx: int) -> Callable[..., Any]:
    """a module-scoped fixture: Llama(model, n_ctx, 2 threads, quiet); assign it to the fixture's name"""

    @pytest.fixture(scope="module")
    def llm() -> Iterator[Any]:
        from lamina import Llama

        with Llama(model, n_ctx=n_ctx, n_threads=2, verbose=False) as llm:
            yield llm

    return llm
