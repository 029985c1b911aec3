"""The layers keep their direction and no package imports in a circle: import-linter's contracts in pyproject.toml.

import-linter walks one package directory, and the layers live in root folders that only an install maps into
`kerasline/`; so each test lays the package out as a wheel does (pyproject's package-dir), then lints that copy.
"""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def installed_layout(target: Path) -> Path:
    """kerasline's .py files where an install puts them: kerasline/, and each folder pyproject maps into it."""
    package_dir = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in {"kerasline": "kerasline", **package_dir}.items():
        for path in (ROOT / folder).rglob("*.py"):
            destination = target / package.replace(".", "/") / path.relative_to(ROOT / folder)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
    return target


def lint_imports(layout: Path) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("lint-imports")), "--no-cache", str(PYPROJECT)]
    return subprocess.run(command, cwd=layout, env={"PYTHONPATH": str(layout)}, capture_output=True, text=True)


def test_the_layers_and_acyclic_contracts_are_kept(tmp_path):
    lint = lint_imports(installed_layout(tmp_path))
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in lint.stdout


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    layout = installed_layout(tmp_path)
    (layout / "kerasline" / "pipelines" / "leak.py").write_text("from kerasline.training import fit  # noqa\n")
    lint = lint_imports(layout)
    assert lint.returncode == 1
    assert "kerasline.pipelines.leak -> kerasline.training.fit" in lint.stdout


def test_an_import_circle_breaks_the_acyclic_contract(tmp_path):
    layout = installed_layout(tmp_path)
    sources = layout / "kerasline" / "pipelines" / "sources.py"  # pipelines/segmentation.py imports it
    sources.write_text(sources.read_text() + "\nfrom kerasline.pipelines import segmentation  # noqa\n")
    lint = lint_imports(layout)
    assert lint.returncode == 1
    assert "no import circles among the modules of any package BROKEN" in lint.stdout
