"""llama-cpp-python's parameters that `Llama` does not take by name, sorted by
what they would do here. A value equal to llama-cpp-python's default is
always accepted (code that spells out defaults keeps working); a parameter
that only tunes speed or memory placement is accepted whatever its value; any
other value that would change results is refused with a clear error, never
silently ignored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lamina.errors import LaminaError


class UnsupportedParameterError(LaminaError, ValueError):
    """A llama-cpp-python parameter lamina does not implement (yet), with a value that would matter."""


# speed / placement only: the output is the same whatever they are
HARMLESS_INIT = {
    "use_mmap",  # lamina always maps the file
    "use_mlock",
    "n_ubatch",  # the physical batch: lamina splits n_batch itself
    "n_threads_batch",  # lamina uses n_threads for prompt and generation alike
    "no_perf",
    "numa",
    "offload_kqv",  # a layer's KV cache always lives with its layer
    "flash_attn",
    "mul_mat_q",
    "main_gpu",
    "split_mode",
    "op_offload",
}

# llama-cpp-python's defaults for what lamina does not implement
DEFAULTS_INIT: dict[str, Any] = {
    "vocab_only": False,
    "kv_overrides": None,
    "rope_scaling_type": -1,
    "rope_freq_base": 0.0,
    "rope_freq_scale": 0.0,
    "yarn_ext_factor": -1.0,
    "yarn_attn_factor": 1.0,
    "yarn_beta_fast": 32.0,
    "yarn_beta_slow": 1.0,
    "yarn_orig_ctx": 0,
    "last_n_tokens_size": 64,
    "lora_base": None,
    "chat_format": None,
    "chat_handler": None,
    "tokenizer": None,
    "type_k": None,
    "type_v": None,
    "tensor_split": None,
    "swa_full": None,
    "attention_type": -1,  # LLAMA_ATTENTION_TYPE_UNSPECIFIED: the model's (causal for decoders)
}

DEFAULTS_COMPLETION: dict[str, Any] = {
    "tfs_z": 1.0,
    "stopping_criteria": None,
    "logits_processor": None,
}

DEFAULTS_CHAT: dict[str, Any] = {
    **DEFAULTS_COMPLETION,
    "functions": None,
    "function_call": None,
}

# llama-cpp-python's sampling keywords lamina takes from **kwargs (so the
# signatures other features extend stay as they are), with their defaults
SAMPLING_KWARGS: dict[str, Any] = {"mirostat_mode": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1}
CHAT_KWARGS: dict[str, Any] = {**SAMPLING_KWARGS, "typical_p": 1.0, "logprobs": None, "top_logprobs": None}


def pop_kwargs(extra: dict[str, Any], names: Mapping[str, Any]) -> dict[str, Any]:
    """The given keywords (or their defaults), taken out of extra."""
    return {name: extra.pop(name, default) for name, default in names.items()}


def check_extra(where: str, given: Mapping[str, Any], defaults: Mapping[str, Any], harmless=frozenset()) -> None:
    """Raise for the first parameter of `given` that lamina would otherwise ignore
    while it changes the result; TypeError for names llama-cpp-python has not got."""
    for name, value in given.items():
        if name in harmless:
            continue
        if name not in defaults:
            raise TypeError(f"{where}() got an unexpected keyword argument {name!r}")
        default = defaults[name]
        if value is default or (type(value) is type(default) and value == default):
            continue
        raise UnsupportedParameterError(
            f"{where}({name}={value!r}) is not supported by lamina yet; leave it at llama-cpp-python's "
            f"default ({default!r})"
        )
