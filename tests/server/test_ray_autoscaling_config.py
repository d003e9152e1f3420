"""Ray Serve's autoscaling settings as lamina takes them (no Ray cluster
started): every flag is one of Ray's own AutoscalingConfig fields and lands
in the deployment unchanged; a bad value is refused with an error naming
the flag (CLI) or argument (Python, `serve run`) before Ray starts, never
dropped. Ray's own model is the oracle for the names and the defaults."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import pytest

config_mod = pytest.importorskip("ray.serve.config")

from lamina.cli import serve as serve_cli  # noqa: E402
from lamina.model_cache import fetch_model  # noqa: E402
from lamina.server import ray_app  # noqa: E402
from lamina.server.ray_app import app_builder, build_app  # noqa: E402
from lamina.server.ray_autoscaling import (  # noqa: E402
    KNOBS,
    RAY_DEFAULTS,
    AutoscalingConfigError,
    autoscaling_config,
    cli_flag,
)
from lamina.server.service import ServerConfig  # noqa: E402

EVERY = {
    "min_replicas": "2",
    "max_replicas": "5",
    "target_ongoing_requests": "1.5",
    "upscale_delay_s": "0.5",
    "downscale_delay_s": "0",
    "metrics_interval_s": "0.25",
    "look_back_period_s": "2",
    "upscaling_factor": "0.5",
    "downscaling_factor": "2",
    "aggregation_function": "max",
}


def _ray_config(app) -> Any:
    # the replica deployment's AutoscalingConfig as Ray holds it (Ray has no public getter for a bound app's config)
    return app._bound_deployment.init_args[0]._bound_deployment._deployment_config.autoscaling_config


def test_the_knobs_are_rays_fields_with_rays_defaults():
    fields = config_mod.AutoscalingConfig.model_fields
    assert {k.name for k in KNOBS} <= set(fields)
    assert set(EVERY) == {k.name for k in KNOBS}
    for name, value in RAY_DEFAULTS.items():
        assert fields[name].default == value, name


def test_every_setting_reaches_the_deployment():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # lamina's own deprecation filter keeps metrics_interval_s quiet
        app = build_app(ServerConfig(model=Path("m.gguf"), n_threads=1), 3, dict(EVERY))
    got = _ray_config(app)
    assert got.initial_replicas == 3
    for name, value in EVERY.items():
        have = getattr(got, name)
        assert str(getattr(have, "value", have)) == value or float(have) == float(value), name
    # `serve run lamina.server.ray_app:app_builder model=... key=value` takes the same names as strings
    got = _ray_config(app_builder({"model": "m.gguf", "threads": "1", "replicas": "2", **EVERY}))
    assert (got.initial_replicas, got.max_replicas, got.upscale_delay_s) == (2, 5, 0.5)
    # without autoscaling: the fixed count
    assert (
        build_app(ServerConfig(model=Path("m.gguf")), 2)._bound_deployment.init_args[0]._bound_deployment.num_replicas
        == 2
    )


@pytest.mark.parametrize(
    ("values", "initial", "field", "match"),
    [
        (
            {"max_replicas": 1, "min_replicas": 2},
            None,
            "max_replicas",
            r"max_replicas \(1\) must be >= min_replicas \(2\)",
        ),
        ({"max_replicas": 2, "upscale_delay_s": -1}, None, "upscale_delay_s", "must be >= 0"),
        ({"max_replicas": 2, "downscale_delay_s": "soon"}, None, "downscale_delay_s", "must be a number"),
        ({"max_replicas": 2, "target_ongoing_requests": 0}, None, "target_ongoing_requests", "must be > 0"),
        ({"max_replicas": 2, "metrics_interval_s": float("inf")}, None, "metrics_interval_s", "must be a number"),
        ({"max_replicas": 2, "metrics_interval_s": 40}, None, "look_back_period_s", r"\(30\) must be greater"),
        ({"max_replicas": 2, "min_replicas": 0}, None, "min_replicas", "scaling to zero is not supported"),
        ({"max_replicas": 2.5}, None, "max_replicas", "must be an integer"),
        ({"max_replicas": True}, None, "max_replicas", "must be an integer"),
        ({"max_replicas": 2, "aggregation_function": "median"}, None, "aggregation_function", "one of mean, max, min"),
        ({"max_replicas": 2, "smoothing_factor": 1}, None, "smoothing_factor", "not an autoscaling setting"),
        ({"upscale_delay_s": 1}, None, "max_replicas", "upscale_delay_s needs max_replicas"),
        ({"max_replicas": 2, "min_replicas": 2}, 1, "replicas", r"replicas \(1\).*within"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(values, initial, field, match):
    with pytest.raises(AutoscalingConfigError, match=match) as e:
        autoscaling_config(values, initial)
    assert e.value.field == field
    # build_app says the same (a ValueError, for `serve run` and Ray users)
    with pytest.raises(ValueError, match=match):
        build_app(ServerConfig(model=Path("m.gguf")), initial, values)


@pytest.mark.parametrize(
    ("flags", "match"),
    [
        (["--max-replicas", "1", "--min-replicas", "2"], r"--max-replicas \(1\) must be >= --min-replicas \(2\)"),
        (["--max-replicas", "2", "--downscale-delay-s", "-3"], r"--downscale-delay-s must be >= 0, got '-3'"),
        (
            ["--max-replicas", "2", "--look-back-period-s", "1"],
            r"--look-back-period-s \(1\) must be greater than --metrics",
        ),
        (["--upscale-delay-s", "1"], "--upscale-delay-s needs --max-replicas"),
        (
            ["--replicas", "3", "--max-replicas", "2"],
            r"--replicas \(3\).*within --min-replicas \(1\) and --max-replicas \(2\)",
        ),
        (["--ray-address", "auto"], "--ray-address needs --replicas N or --max-replicas N"),
    ],
)
def test_the_cli_refuses_a_bad_flag_before_ray_starts(flags, match, capsys, monkeypatch):
    monkeypatch.setattr(ray_app, "serve_forever", lambda *a, **k: pytest.fail(f"Ray started with {a} {k}"))
    model = str(fetch_model("smollm2-135m-instruct"))
    assert serve_cli.main([model, *flags]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lamina serve: error: ")
    assert re.search(match, err), err


def test_the_cli_names_rays_fields():
    flags = {a.dest: a.option_strings for a in serve_cli.parser()._actions}
    for knob in KNOBS:
        assert flags[knob.name] == [cli_flag(knob.name)]
