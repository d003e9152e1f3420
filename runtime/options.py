"""What a user may pass, checked once for every front end: the `Llama` API,
`lamina run`, `lamina bench`, `lamina perplexity` (and the server) call the
same functions, so a value means the same thing and fails the same way
everywhere. Each takes the Python value or the command line's string and
returns the normalized value or raises OptionError naming the option; on the
command line argparse adds the flag ("argument --temp: ...")."""

from __future__ import annotations

import math
import operator
import os
import re
from pathlib import Path
from typing import SupportsIndex

from lamina.errors import LaminaError
from lamina.system import available_cpus

UINT32_MAX = 0xFFFFFFFF
RANDOM_SEEDS = (-1, UINT32_MAX)  # llama.cpp's --seed -1, llama-cpp-python's LLAMA_DEFAULT_SEED
MAX_N_CTX = 2**31 - 1
MAX_THREADS_PER_CPU = 4
MAX_SEQUENCES = 256


class OptionError(LaminaError, ValueError):
    """A parameter outside what it can mean; the message names it."""


def _int(name: str, value: object) -> int:
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise OptionError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, SupportsIndex):
        # numpy integers pass; bools, floats, None and the rest do not
        raise OptionError(f"{name} must be an integer, got {value!r}")
    return operator.index(value)


def _float(name: str, value: object) -> float:
    try:
        f = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    except ValueError:
        f = None
    if f is None:
        raise OptionError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(f):
        raise OptionError(f"{name} must be a finite number, got {value!r}")
    return f


def n_threads(value: object, name: str = "n_threads") -> int:
    """1 .. 4 per available CPU: past that a thread count is a typo (-t 500), and
    more threads than CPUs only make the pool wait on itself anyway."""
    n = _int(name, value)
    cap = MAX_THREADS_PER_CPU * available_cpus()
    if not 1 <= n <= cap:
        raise OptionError(
            f"{name} must be in [1, {cap}] ({MAX_THREADS_PER_CPU} per CPU available to this process), got {n}"
        )
    return n


def n_ctx(value: object, name: str = "n_ctx") -> int:
    """0 (the model's default) or a positive context size."""
    n = _int(name, value)
    if not 0 <= n <= MAX_N_CTX:
        raise OptionError(f"{name} must be 0 (the model's) or in [1, {MAX_N_CTX}], got {n}")
    return n


def n_batch(value: object, name: str = "n_batch") -> int:
    n = _int(name, value)
    if not 1 <= n <= MAX_N_CTX:
        raise OptionError(f"{name} must be a positive integer, got {n}")
    return n


def n_seq_max(value: object, name: str = "n_seq_max") -> int:
    """Sequences decoded together (llama.cpp's n_seq_max / llama-server's -np)."""
    n = _int(name, value)
    if not 1 <= n <= MAX_SEQUENCES:
        raise OptionError(f"{name} must be in [1, {MAX_SEQUENCES}], got {n}")
    return n


def n_predict(value: object, name: str = "n_predict") -> int | None:
    """Tokens to generate: a positive count, or -1 (or None) for "until the model stops"."""
    if value is None:
        return None
    n = _int(name, value)
    if n == -1:
        return None
    if n < 1:
        raise OptionError(f"{name} must be -1 (until the model stops) or a positive count, got {n}")
    return n


def gpu_layers(value: object, name: str = "n_gpu_layers") -> int | str:
    """llama.cpp's count (the output head is one layer), -1 for all of them, or "auto"."""
    if value is None:
        return 0
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    n = _int(name, value)
    if n < -1:
        raise OptionError(f"{name} must be -1 (all layers), 'auto' or a count >= 0, got {n}")
    return n


def seed(value: object, name: str = "seed") -> int | None:
    """A seed in [0, 2**32 - 1]; -1, 0xFFFFFFFF or None: a random one (llama.cpp's meaning)."""
    if value is None:
        return None
    s = _int(name, value)
    if s in RANDOM_SEEDS:
        return None
    if not 0 <= s < UINT32_MAX:
        raise OptionError(f"{name} must be in [0, {UINT32_MAX - 1}], or -1 for a random seed, got {s}")
    return s


def temperature(value: object, name: str = "temperature") -> float:
    t = _float(name, value)
    if t < 0:
        raise OptionError(f"{name} must be >= 0 (0: greedy), got {t}")
    return t


def probability(value: object, name: str) -> float:
    p = _float(name, value)
    if not 0.0 <= p <= 1.0:
        raise OptionError(f"{name} must be in [0, 1], got {p}")
    return p


def top_p(value: object, name: str = "top_p") -> float:
    p = _float(name, value)
    if not 0.0 < p <= 1.0:
        raise OptionError(f"{name} must be in (0, 1] (1: off), got {p}")
    return p


def top_k(value: object, name: str = "top_k") -> int:
    k = _int(name, value)
    if k < 0:
        raise OptionError(f"{name} must be >= 0 (0: off), got {k}")
    return k


def repeat_penalty(value: object, name: str = "repeat_penalty") -> float:
    r = _float(name, value)
    if r <= 0:
        raise OptionError(f"{name} must be > 0 (1: off), got {r}")
    return r


def penalty(value: object, name: str) -> float:
    """frequency / presence penalties: any finite number (0: off)."""
    return _float(name, value)


def logit_bias(value: object, name: str = "logit_bias") -> tuple[tuple[int, float], ...]:
    """OpenAI's / llama-cpp-python's {token id: bias} (ids as ints or, as JSON
    sends them, decimal strings): added to the token's logit before sampling;
    -inf bans it. Returns ((id, bias), ...) sorted by id; None or {}: ()."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise OptionError(f"{name} must be a mapping of token id to bias, got {type(value).__name__}")
    out = {}
    for key, bias in value.items():
        token = _int(f"{name} token id", key)
        if token < 0:
            raise OptionError(f"{name} token id must be >= 0, got {token}")
        banned = isinstance(bias, (int, float)) and bias == -math.inf
        out[token] = -math.inf if banned else _float(f"{name}[{token}]", bias)
    return tuple(sorted(out.items()))


def typical_p(value: object, name: str = "typical_p") -> float:
    """Locally typical sampling's mass in (0, 1] (1: off)."""
    p = _float(name, value)
    if not 0.0 < p <= 1.0:
        raise OptionError(f"{name} must be in (0, 1] (1: off), got {p}")
    return p


def mirostat(value: object, name: str = "mirostat") -> int:
    """0 off, 1 Mirostat, 2 Mirostat 2.0 (llama.cpp's --mirostat)."""
    m = _int(name, value)
    if m not in (0, 1, 2):
        raise OptionError(f"{name} must be 0 (off), 1 (Mirostat) or 2 (Mirostat 2.0), got {m}")
    return m


def mirostat_tau(value: object, name: str = "mirostat_tau") -> float:
    """The target surprise, in bits per token."""
    t = _float(name, value)
    if t < 0:
        raise OptionError(f"{name} must be >= 0 (bits of surprise per token), got {t}")
    return t


def mirostat_eta(value: object, name: str = "mirostat_eta") -> float:
    """The learning rate of mu."""
    e = _float(name, value)
    if not 0.0 <= e <= 1.0:
        raise OptionError(f"{name} must be in [0, 1], got {e}")
    return e


def logit_bias_flag(value: str, name: str = "logit-bias") -> tuple[int, float]:
    """llama.cpp's -l/--logit-bias TOKEN_ID(+/-)BIAS: "15043+1" raises token
    15043's logit by 1, "15043-1" lowers it, "15043-inf" bans it."""
    m = re.fullmatch(r"\s*(\d+)\s*([+-])\s*(\S+)\s*", value)
    if m is None:
        raise OptionError(f"{name} must be TOKEN_ID(+/-)BIAS, e.g. 15043+1 or 15043-inf, got {value!r}")
    token, sign, magnitude = int(m[1]), m[2], m[3]
    if magnitude.lower() in ("inf", "infinity"):
        if sign == "+":
            raise OptionError(f"{name} {value!r}: +inf is not a bias (-inf bans a token; +100 forces one)")
        return token, -math.inf
    bias = _float(f"{name} bias", magnitude)
    return token, -bias if sign == "-" else bias


def repeat_last_n(value: object, name: str = "repeat_last_n") -> int:
    n = _int(name, value)
    if n < -1:
        raise OptionError(f"{name} must be -1 (the whole context), 0 (off) or a count, got {n}")
    return n


def model_file(value: str | os.PathLike[str] | None) -> Path:
    """A GGUF path, or a known model name fetched once into the cache (the default model for None)."""
    from lamina.model_cache import resolve_model

    return resolve_model(value)
