"""Hostile chat templates (they come inside downloaded GGUF files): each
blow-up a single Jinja operation could cause is refused before it happens,
and a template that loops too long is stopped; all as ChatTemplateError, in
well under the render deadline, with the process's memory untouched."""

from __future__ import annotations

import resource
import time

import pytest

from lamina.chat_template import ChatTemplate, ChatTemplateError

MESSAGES = [{"role": "user", "content": "hi"}]
DOUBLING = "{% set ns = namespace(x='ab') %}{% for i in range(40) %}{% set ns.x = ns.x OP ns.x %}{% endfor %}{{ ns.x }}"

BOMBS = {
    "string times a billion": ("{{ 'x' * 1000000000 }}", "'*'"),
    "list times a billion": ("{{ ([1] * 1000000000) | length }}", "'*'"),
    "huge power": ("{{ 9 ** (9 ** 9) }}", "'**'"),
    "slow power": ("{{ 5 ** 10000000 }}", "'**'"),  # found by fuzzing: seconds of CPU
    "printf width": ("{{ '%0999999999d' % 1 }}", "'%'"),
    "doubling with +": (DOUBLING.replace("OP", "+"), "'+'"),
    "doubling with ~": (DOUBLING.replace("OP", "~"), "'~'"),
    "format width": ("{{ '{:>999999999}'.format(1) }}", "format width"),
    "format width from an argument": ("{{ '{:{}}'.format(1, 999999999) }}", "format width"),
    "center filter": ("{{ 'a' | center(999999999) }}", "center"),
    "indent filter": ("{{ 'a\\nb' | indent(999999999) }}", "indent"),
    "format filter": ("{{ '%999999999d' | format(1) }}", "format"),
}


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("source, mention", BOMBS.values(), ids=BOMBS.keys())
def test_a_blow_up_is_refused_before_it_allocates(source: str, mention: str) -> None:
    before = _max_rss_mb()
    t0 = time.perf_counter()
    with pytest.raises(ChatTemplateError) as e:
        ChatTemplate(source).render(MESSAGES)
    assert time.perf_counter() - t0 < 0.5
    assert mention in str(e.value)
    assert _max_rss_mb() - before < 50  # peak RSS: the value was never built


def test_a_template_that_loops_too_long_is_stopped_at_the_deadline() -> None:
    loop = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}done"
    t0 = time.perf_counter()
    with pytest.raises(ChatTemplateError, match="longer than 0.3 s"):
        ChatTemplate(loop).render(MESSAGES, max_seconds=0.3)
    assert time.perf_counter() - t0 < 1.0


def test_the_same_operations_at_sane_sizes_still_render() -> None:
    source = (
        "{{ messages[0].content ~ '!' }} {{ 2 ** 10 }} {{ 'ab' * 3 }} {{ '%5d' % 3 }} "
        "{{ '{:>4}'.format(1) }} {{ 'a' | center(5) }} {{ '%3d' | format(7) }} {{ ([0] * 3) | length }}"
    )
    assert ChatTemplate(source).render(MESSAGES) == "hi! 1024 ababab     3    1   a     7 3"


def test_the_deadline_does_not_leave_a_tracer_behind() -> None:
    import sys

    previous = sys.gettrace()
    with pytest.raises(ChatTemplateError):
        ChatTemplate("{{ 'x' * 1000000000 }}").render(MESSAGES)
    ChatTemplate("{{ messages[0].content }}").render(MESSAGES)
    assert sys.gettrace() is previous


def test_deep_nesting_is_a_template_error_not_a_recursion_error() -> None:
    # found by tests/fuzz/fuzz_chat_template.py: Jinja's parser recursed out of the stack
    with pytest.raises(ChatTemplateError, match="too deeply nested"):
        ChatTemplate("{{ 0 * 1 }} {{" + "{" * 5000 + " }")


@pytest.mark.parametrize("value", ["1", [1, 2], 1.5, True])
def test_a_token_id_of_the_wrong_type_is_a_template_error_naming_the_key(value: object) -> None:
    meta = {"tokenizer.ggml.tokens": ["<s>", "</s>"], "tokenizer.ggml.bos_token_id": value}
    with pytest.raises(ChatTemplateError, match="tokenizer.ggml.bos_token_id: expected a token id"):
        ChatTemplate.from_metadata(meta)
