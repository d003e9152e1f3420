"""Ray Serve's autoscaling settings for lamina replicas: which of Ray's
`autoscaling_config` fields lamina takes (under Ray's own names: the CLI's
`--upscale-delay-s` is Ray's `upscale_delay_s`), and their checks, so a bad
value is refused naming the flag or argument that carried it instead of
surfacing as a Ray traceback, or being dropped.

This module does not import ray (`lamina serve --help` lists the flags
without the extra); lamina.server.ray_app hands the checked dict to Ray.

How Ray 2.60 decides (ray.serve.autoscaling_policy): every
`metrics_interval_s` the ingress's handle reports its ongoing + queued
requests per replica, averaged over the last `look_back_period_s`; when
total / `target_ongoing_requests` stays above (below) the replica count for
`upscale_delay_s` (`downscale_delay_s`), Ray moves to it, within
[`min_replicas`, `max_replicas`] and damped by `upscaling_factor` /
`downscaling_factor`. Ray's defaults (10 s, 30 s, 30 s, 600 s) take
minutes to react; a model that loads in seconds can use a few seconds each.
`metrics_interval_s` is marked deprecated in Ray 2.60 in favour of two
environment variables that 2.60 does not read yet, so it is still the knob
that sets the reporting interval."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lamina.errors import LaminaError


class AutoscalingConfigError(LaminaError, ValueError):
    """A bad autoscaling setting; `field` is the flag or argument that carried it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Knob:
    name: str  # Ray's autoscaling_config field
    kind: type  # int, float or str
    low: float | None  # the smallest value (ints, floats), None for a choice
    open_low: bool  # low itself is refused
    help: str
    choices: tuple[str, ...] = ()


KNOBS: tuple[Knob, ...] = (
    Knob("min_replicas", int, 1, False, "fewest replicas (>= 1; default 1)"),
    Knob("max_replicas", int, 1, False, "most replicas: turns autoscaling on"),
    Knob("target_ongoing_requests", float, 0, True, "ongoing + queued requests per replica Ray aims at (default 2)"),
    Knob("upscale_delay_s", float, 0, False, "seconds the load must ask for more replicas before Ray adds one (30)"),
    Knob("downscale_delay_s", float, 0, False, "seconds the load must allow fewer before Ray removes one (600)"),
    Knob("metrics_interval_s", float, 0, True, "seconds between the load reports Ray decides on (10)"),
    Knob("look_back_period_s", float, 0, True, "seconds of reports averaged (30; more than the interval)"),
    Knob("upscaling_factor", float, 0, True, "gain on each scale-up step (default 1: all the way)"),
    Knob("downscaling_factor", float, 0, True, "gain on each scale-down step (default 1)"),
    Knob("aggregation_function", str, None, False, "how the look-back combines reports (mean)", ("mean", "max", "min")),
)
BY_NAME = {k.name: k for k in KNOBS}
# Ray 2.60's defaults for the fields the cross-checks need when one side is not given
RAY_DEFAULTS = {"min_replicas": 1, "metrics_interval_s": 10.0, "look_back_period_s": 30.0}


def cli_flag(name: str) -> str:
    """min_replicas -> --min-replicas"""
    return "--" + name.replace("_", "-")


def autoscaling_config(
    values: Mapping[str, Any],
    initial_replicas: int | None = None,
    spell: Callable[[str], str] = str,
) -> dict[str, Any]:
    """Ray's autoscaling_config from values (Ray's names; ints, floats, or
    strings as `serve run` arguments come), with initial_replicas (default:
    min_replicas). Raises AutoscalingConfigError naming spell(field)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        knob = BY_NAME.get(name)
        if knob is None:
            hint = " (scaling to zero is not supported)" if name == "downscale_to_zero_delay_s" else ""
            raise AutoscalingConfigError(
                spell(name),
                f"{spell(name)}: not an autoscaling setting lamina takes{hint}; "
                f"expected one of {', '.join(spell(k.name) for k in KNOBS)}",
            )
        out[name] = _checked(knob, value, spell(name))
    if "max_replicas" not in out:
        given = ", ".join(spell(n) for n in out) or "autoscaling"
        raise AutoscalingConfigError(
            spell("max_replicas"),
            f"{given} needs {spell('max_replicas')}: autoscaling scales between "
            f"{spell('min_replicas')} (default 1) and {spell('max_replicas')} (Ray's default, 1, leaves no room)",
        )
    least, most = out.get("min_replicas", RAY_DEFAULTS["min_replicas"]), out["max_replicas"]
    if most < least:
        raise AutoscalingConfigError(
            spell("max_replicas"), f"{spell('max_replicas')} ({most}) must be >= {spell('min_replicas')} ({least})"
        )
    if initial_replicas is not None:
        start = _checked(Knob("replicas", int, 1, False, ""), initial_replicas, spell("replicas"))
        if not least <= start <= most:
            raise AutoscalingConfigError(
                spell("replicas"),
                f"{spell('replicas')} ({start}), the replicas to start with, must be within "
                f"{spell('min_replicas')} ({least}) and {spell('max_replicas')} ({most})",
            )
        out["initial_replicas"] = start
    interval = out.get("metrics_interval_s", RAY_DEFAULTS["metrics_interval_s"])
    window = out.get("look_back_period_s", RAY_DEFAULTS["look_back_period_s"])
    if window <= interval:
        # Ray 2.60 only warns; a window holding no full report averages nothing
        raise AutoscalingConfigError(
            spell("look_back_period_s"),
            f"{spell('look_back_period_s')} ({window:g}) must be greater than "
            f"{spell('metrics_interval_s')} ({interval:g}): the window averages the reports made in it",
        )
    return out


def _checked(knob: Knob, value: Any, flag: str) -> Any:
    if knob.choices:
        text = str(value).lower() if isinstance(value, str) else None
        if text not in knob.choices:
            raise AutoscalingConfigError(flag, f"{flag} must be one of {', '.join(knob.choices)}, got {value!r}")
        return text
    kind = "an integer" if knob.kind is int else "a number"
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value.strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise AutoscalingConfigError(flag, f"{flag} must be {kind}, got {value!r}") from None
    if not math.isfinite(number) or (knob.kind is int and number != int(number)):
        raise AutoscalingConfigError(flag, f"{flag} must be {kind}, got {value!r}")
    assert knob.low is not None
    if number < knob.low or (knob.open_low and number == knob.low):
        bound = f"> {knob.low:g}" if knob.open_low else f">= {knob.low:g}"
        zero = knob.name == "min_replicas"
        why = " (scaling to zero is not supported: a replica loads its model first)" if zero else ""
        raise AutoscalingConfigError(flag, f"{flag} must be {bound}, got {value!r}{why}")
    return int(number) if knob.kind is int else number
