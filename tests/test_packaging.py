"""A wheel install works without the checkout: templates and the chat client travel inside the wheel.

Builds the wheel from a copy of the sources (so no build/ folder lands in the repository), installs it
into a fresh venv, and runs `lorekit compile` and `lorekit validate` from another folder. The dataset
must equal, byte for byte, the one the checkout compiles.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from lorekit.cli import main

REPO = Path(__file__).resolve().parent.parent
from tests.conftest import SAMPLE_LORE  # noqa: E402

DATASET_FILES = ("train.jsonl", "eval.jsonl")


def _copy_sources(dst: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    for name in ("lorekit", "templates", "runtime"):
        shutil.copytree(REPO / name, dst / name, ignore=ignore)
    return dst


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done


def test_package_list_names_every_package():
    """pyproject lists the packages by hand (mapped folders cannot be found): a new subpackage must be added."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {p.parent.relative_to(REPO).as_posix().replace("/", ".") for p in (REPO / "lorekit").rglob("__init__.py")}
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"
    assert {"lorekit._templates", "lorekit._runtime"} <= listed


def test_wheel_install_compiles_like_the_checkout(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    src = _copy_sources(tmp_path / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp_path / "dist"), str(src)], cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("lorekit-*.whl"))

    # a venv that sees the system's jinja2/pyyaml but imports lorekit from the wheel (pip from the system)
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], cwd=tmp_path)
    py, lorekit_cmd = venv / "bin" / "python", venv / "bin" / "lorekit"
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--ignore-installed", str(wheel)],
         cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = _run([str(py), "-c", "import lorekit, lorekit.compile.templates as t, lorekit.serve.cli_chat as c; "
                  "import lorekit.priors as p; print(lorekit.__file__); print(t.DEFAULT_DIR); print(c.client_path()); "
                  "print(p.find('gemma3-270m-notes'))"], elsewhere, env)
    package_file, templates_dir, client, prior = where.stdout.split("\n")[:4]
    installed = venv.resolve()
    assert Path(package_file).resolve().is_relative_to(installed), package_file
    assert Path(templates_dir).resolve().is_relative_to(installed), templates_dir
    assert Path(client).resolve().is_relative_to(installed) and Path(client).is_file(), client
    assert Path(prior).resolve().is_relative_to(installed) and (Path(prior) / "PRIOR.json").is_file(), prior

    _run([str(lorekit_cmd), "compile", str(SAMPLE_LORE), "--out", "out", "-q"], elsewhere, env)
    checked = _run([str(lorekit_cmd), "validate", str(SAMPLE_LORE)], elsewhere, env)
    assert " 0 error(s)" in checked.stdout

    assert main(["compile", str(SAMPLE_LORE), "--out", str(tmp_path / "checkout"), "-q"]) == 0
    main(["validate", str(SAMPLE_LORE)])
    assert checked.stdout == capsys.readouterr().out  # same problems, same words
    for name in DATASET_FILES:
        from_wheel = (elsewhere / "out" / "dataset" / name).read_bytes()
        assert from_wheel and from_wheel == (tmp_path / "checkout" / "dataset" / name).read_bytes(), name


@pytest.mark.parametrize("shipped", [True, False])
def test_default_templates_prefer_the_shipped_copy(tmp_path, monkeypatch, shipped):
    """`default_dir()` takes lorekit/_templates when a wheel put it there, else the checkout's templates/."""
    import importlib.resources

    from lorekit.compile import templates

    package = tmp_path / "lorekit"
    (package / "_templates").mkdir(parents=True)
    if shipped:
        (package / "_templates" / "persona.j2").write_text("{% block system %}x{% endblock %}")
    monkeypatch.setattr(importlib.resources, "files", lambda name: package)
    assert templates.default_dir() == (package / "_templates" if shipped else templates.CHECKOUT_DIR)
