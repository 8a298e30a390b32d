"""The wheel holds every module: built from this checkout, installed apart from it, each module imported.

A subpackage left out of the build (a hand-written package list) would only
show on a user's machine; here it fails the suite.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_NOT_SOURCES = (".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")


@pytest.mark.timeout(300)
def test_the_wheel_has_every_module_and_template_and_they_import(tmp_path: Path) -> None:
    # Built from a clean copy: a stale *.egg-info/SOURCES.txt in the checkout would add data files the
    # package-data declaration leaves out, and hide that from this test.
    clean = tmp_path / "src"
    shutil.copytree(ROOT, clean, ignore=shutil.ignore_patterns(*_NOT_SOURCES))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(clean),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = tmp_path.glob("ai_memory_sdk-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "ai_memory_sdk").rglob("*.py") if "__pycache__" not in p.parts}
    assert sources <= names, f"missing from the wheel: {sorted(sources - names)}"
    templates = {f"ai_memory_sdk/prompts/{p.name}" for p in (ROOT / "prompts").glob("*.j2")}
    assert templates and templates <= names, f"templates missing: {sorted(templates - names)}"
    assert "ai_memory_sdk/py.typed" in names
    inspector = ROOT / "ai_memory_sdk" / "inspector"
    assets = {str(p.relative_to(ROOT)) for d in ("templates", "static") for p in (inspector / d).iterdir()}
    assert assets and assets <= names, f"inspector templates or static files missing: {sorted(assets - names)}"

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    modules = sorted(
        n[:-3].replace("/", ".").removesuffix(".__init__") for n in names if n.endswith(".py") and "__main__" not in n
    )
    script = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(target)!r})\n"
        "import ai_memory_sdk\n"
        f"assert ai_memory_sdk.__file__.startswith({str(target)!r}), ai_memory_sdk.__file__\n"
        f"failed = []\n"
        f"for m in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ImportError as exc:\n"
        "        failed.append(f'{m}: {exc}')\n"
        "from importlib import resources\n"
        "assert resources.files('ai_memory_sdk.prompts').joinpath('system.j2').read_text()\n"
        "from ai_memory_sdk.inspector.routes import _environment\n"
        "env = _environment()\n"
        "assert len([env.get_template(n) for n in env.list_templates()]) >= 5, env.list_templates()\n"
        "assert resources.files('ai_memory_sdk.inspector').joinpath('static', 'inspector.css').read_text()\n"
        "print('\\n'.join(failed))\n"
    )
    # Run outside the checkout, so the source tree cannot stand in for the wheel.
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "", f"modules that do not import from the wheel:\n{proc.stdout}"
