"""Loads the cffi extension `lamina._lamina` built from native/.

Search order: $LAMINA_NATIVE_DIR (a developer build, tools/dev_build.sh, so
parallel builds of one checkout never collide), else the module installed
with the package (`pip install .` or `pip install -e .`)."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
from pathlib import Path
from types import ModuleType

from lamina.errors import LaminaError


class NativeLibraryError(LaminaError, ImportError):
    """The compiled core is missing or does not load."""


def _load_from_dir(directory: Path) -> ModuleType | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = directory / f"_lamina{suffix}"
        if candidate.is_file():
            spec = importlib.util.spec_from_file_location("lamina._lamina", candidate)
            if spec is None or spec.loader is None:  # not for an extension-module suffix, but typed Optional
                raise NativeLibraryError(f"{candidate}: no import loader for this file")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    return None


def _load() -> ModuleType:
    override = os.environ.get("LAMINA_NATIVE_DIR")
    if override:
        module = _load_from_dir(Path(override))
        if module is None:
            raise NativeLibraryError(f"LAMINA_NATIVE_DIR={override} holds no _lamina extension module")
        return module
    try:
        from lamina import _lamina

        return _lamina
    except ImportError:
        pass
    raise NativeLibraryError(
        "lamina's native core is not built: run `pip install .` (or `pip install -e .`) in the repository "
        "(or tools/dev_build.sh and export LAMINA_NATIVE_DIR)"
    )


_module = _load()
ffi = _module.ffi
lib = _module.lib


def native_dir() -> Path:
    """The directory the loaded core came from (liblamina_cuda sits beside it)."""
    if _module.__file__ is None:  # an extension module always has a file
        raise NativeLibraryError("lamina._lamina: the loaded module has no file")
    return Path(_module.__file__).resolve().parent


def last_error() -> str:
    return ffi.string(lib.lm_last_error()).decode("utf-8", "replace")
