"""Shared fixtures. Every test runs with user-wide state (LOREKIT_HOME) in a temporary folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_LORE = REPO / "sample_lore"


def load_script(path: Path, name: str):
    """A script that is not a package module (bench/, runtime/conformance/) imported as module `name`;
    registered in sys.modules, where its dataclasses look their module up."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def grounded_copy(dest: Path) -> Path:
    """A copy of the sample world, whose quick-start lorekit.toml keeps lore notes on: what the grounding and
    serving tests exercise (the name stays from when the quick start turned notes off)."""
    import shutil

    shutil.copytree(SAMPLE_LORE, dest)
    text = (dest / "lorekit.toml").read_text(encoding="utf-8")
    assert "\nnotes = false" not in text, "sample_lore/lorekit.toml turns notes off: grounded_copy must turn them on"
    return dest


@pytest.fixture(autouse=True)
def lorekit_home(tmp_path, monkeypatch):
    home = tmp_path / "lorekit-home"
    monkeypatch.setenv("LOREKIT_HOME", str(home))
    for var in [v for v in os.environ if v.startswith("LOREKIT_") and v != "LOREKIT_HOME"]:
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """A session-wide cache for slow one-time conversions (the 270M GGUF to safetensors)."""
    return Path(os.environ.get("LOREKIT_TEST_CACHE") or tmp_path_factory.mktemp("model-cache"))
