"""Packaging: the wheel of this checkout installs into a fresh virtual environment and runs from an empty directory,
and the Dockerfile and the Kubernetes/Compose manifests agree with pyproject.toml and the CLI.

No Docker engine and no network here: the wheel is built offline (--no-build-isolation, --no-index) and the
dependency stack already installed in the running interpreter is made visible to the fresh environment with a
`.pth` line, so `kerasline` itself can only come from the wheel."""

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
LAYERS = ["pipelines", "models", "training", "export", "tuning", "serving"]
WHEEL_NAME = f"kerasline-{VERSION}-py3-none-any.whl"
MANIFESTS = sorted(
    path
    for folder in ("training/deploy", "serving/deploy")
    for ext in ("yaml", "yml")
    for path in (ROOT / folder).glob(f"*.{ext}")
)
# Left out of the copy the wheel is built from: what .gitignore / .dockerignore leave out of a clean checkout.
_NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "runs", "exports", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache"
)


def _run(cmd: list, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _explain(result: subprocess.CompletedProcess, tail: int = 4000) -> str:
    return f"exit {result.returncode}\n--- stdout ---\n{result.stdout[-tail:]}\n--- stderr ---\n{result.stderr[-tail:]}"


# ---------------------------------------------------------------------------------------------------------------------
# 1. The wheel, installed into a fresh virtual environment, run from an empty directory
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the checkout, built offline from a clean copy of it: building in place would read the shared
    build/lib, whose stale files (modules deleted since) setuptools puts into the wheel, and write build/ and
    *.egg-info into a checkout others are editing."""
    work = tmp_path_factory.mktemp("wheel")
    source, dist = work / "source", work / "dist"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCES, symlinks=True)
    result = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, source],
        cwd=work,
        timeout=300,
    )
    assert result.returncode == 0, _explain(result)
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {dist}, found {[w.name for w in wheels]}"
    return wheels[0]


@pytest.fixture(scope="module")
def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


@dataclass(frozen=True)
class Fresh:
    root: Path
    python: Path
    kerasline: Path
    site_packages: Path
    env: dict


@pytest.fixture(scope="module")
def fresh(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Fresh:
    """A new virtual environment with the wheel installed (no dependencies) and the running interpreter's
    site-packages appended by a plain `.pth` path line: that line does not run the editable install's own .pth
    there, so `import kerasline` in the fresh environment finds only the wheel's copy."""
    root = tmp_path_factory.mktemp("fresh") / "venv"
    created = _run([sys.executable, "-m", "venv", "--without-pip", root], cwd=root.parent)
    assert created.returncode == 0, _explain(created)
    python = root / "bin" / "python"
    # `pip --python` (pip >= 22.3) installs into another environment with this interpreter's pip.
    installed = _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel],
        cwd=root.parent,
        timeout=300,
    )
    assert installed.returncode == 0, _explain(installed)
    query = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root.parent)
    site_packages = Path(query.stdout.strip())
    assert site_packages.is_dir(), _explain(query)
    stack = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site_packages / "_kerasline_test_stack.pth").write_text("".join(f"{path}\n" for path in stack))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", VIRTUAL_ENV=str(root), PATH=f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return Fresh(root=root, python=python, kerasline=root / "bin" / "kerasline", site_packages=site_packages, env=env)


def _package_files(fresh: Fresh) -> set[str]:
    package = fresh.site_packages / "kerasline"
    return {
        p.relative_to(package).as_posix()
        for p in package.rglob("*")
        if "__pycache__" not in p.relative_to(package).parts
    }


@pytest.fixture(scope="module")
def trained(fresh: Fresh, tmp_path_factory: pytest.TempPathFactory):
    """One short `kerasline train mnist_cnn` by the installed console script, in an empty directory."""
    cwd = tmp_path_factory.mktemp("empty_train")
    before = _package_files(fresh)
    result = _run(
        [
            fresh.kerasline,
            "train",
            "mnist_cnn",
            "training.epochs=1",
            "data.limit=400",
            "data.batch_size=64",
            "export.parity_samples=8",
        ],
        cwd=cwd,
        env=fresh.env,
        timeout=900,
    )
    return cwd, result, before, _package_files(fresh)


def test_wheel_file_name_is_the_pyproject_version_pure_python(wheel: Path):
    assert wheel.name == WHEEL_NAME


def test_wheel_holds_the_layer_packages_shipped_experiments_and_sample_data(wheel_names: list[str]):
    for name in [
        "kerasline/__init__.py",
        "kerasline/cli.py",
        "kerasline/shipped.py",
        "kerasline/models/__init__.py",
        "kerasline/export/publish.py",
        "kerasline/experiments/mnist_cnn.toml",
        "kerasline/data/mnist_8k.npz",
        "kerasline/data/isbi2012_membrane/image/0.png",
    ]:
        assert name in wheel_names, f"{name} is missing from the wheel"
    entry_points = next(n for n in wheel_names if n.endswith(".dist-info/entry_points.txt"))
    assert entry_points.startswith(f"kerasline-{VERSION}.dist-info/")


def test_wheel_has_no_top_level_layer_packages_that_would_collide_in_site_packages(wheel_names: list[str]):
    top_level = {name.split("/")[0] for name in wheel_names}
    assert not top_level & set(LAYERS), f"generic top-level packages in the wheel: {sorted(top_level & set(LAYERS))}"
    assert top_level == {"kerasline", f"kerasline-{VERSION}.dist-info"}, sorted(top_level)


def test_wheel_holds_every_python_module_of_the_mapped_source_folders(wheel_names: list[str]):
    """A sub-package (e.g. a new training/tasks/) missing from pyproject's explicit `packages` list is silently
    left out of the wheel; the editable install still finds it, so only an installed wheel breaks."""
    missing: dict[str, list[str]] = {}  # dotted package -> its source files the wheel lacks
    for package, src in {"kerasline": "kerasline", **PACKAGE_DIRS}.items():
        for path in sorted((ROOT / src).rglob("*.py")):
            relative = path.relative_to(ROOT / src)
            if "__pycache__" in relative.parts:
                continue
            if f"{package.replace('.', '/')}/{relative.as_posix()}" not in wheel_names:
                dotted = ".".join([package, *relative.parent.parts])
                missing.setdefault(dotted, []).append(path.relative_to(ROOT).as_posix())
    assert not missing, (
        "packages missing from the wheel (add them to [tool.setuptools] packages in pyproject.toml):\n"
        + ("\n".join(f"  {package}: {', '.join(files)}" for package, files in missing.items()))
    )


def test_installed_console_script_prints_the_pyproject_version(fresh: Fresh, tmp_path: Path):
    result = _run([fresh.kerasline, "--version"], cwd=tmp_path, env=fresh.env)
    assert result.returncode == 0, _explain(result)
    assert result.stdout.strip() == f"kerasline {VERSION}"


def test_installed_layer_packages_import_from_the_fresh_venv_not_the_checkout(fresh: Fresh, tmp_path: Path):
    code = (
        "import json, kerasline, kerasline.models, kerasline.export; "
        "print(json.dumps([kerasline.__file__, kerasline.models.__file__, kerasline.export.__file__]))"
    )
    result = _run([fresh.python, "-c", code], cwd=tmp_path, env=fresh.env)
    assert result.returncode == 0, _explain(result)
    for file in json.loads(result.stdout.strip().splitlines()[-1]):
        path = Path(file).resolve()
        assert path.is_relative_to(fresh.site_packages.resolve()), f"{path} is not the wheel's copy"
        assert not path.is_relative_to(ROOT), f"{path} comes from the checkout"


def test_installed_config_resolves_the_shipped_experiment_from_an_empty_directory(fresh: Fresh, tmp_path: Path):
    result = _run([fresh.kerasline, "config", "mnist_cnn"], cwd=tmp_path, env=fresh.env)
    assert result.returncode == 0, _explain(result)
    assert 'name = "mnist_cnn"' in result.stdout
    assert list(tmp_path.iterdir()) == [], "printing a config wrote into the current directory"


def test_installed_config_prefers_an_experiments_folder_in_the_current_directory(fresh: Fresh, tmp_path: Path):
    shipped = (fresh.site_packages / "kerasline" / "experiments" / "mnist_cnn.toml").read_text()
    mine = shipped.replace("seed = 42", "seed = 4242")
    assert mine != shipped, "the shipped mnist_cnn.toml no longer sets `seed = 42`: pick another key to change"
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "mine.toml").write_text(mine)
    (tmp_path / "experiments" / "mnist_cnn.toml").write_text(mine)  # same name as a shipped one: the local one wins

    for name in ("mine", "mnist_cnn"):
        result = _run([fresh.kerasline, "config", name], cwd=tmp_path, env=fresh.env)
        assert result.returncode == 0, _explain(result)
        assert "seed = 4242" in result.stdout, f"`kerasline config {name}` did not read ./experiments/{name}.toml"


def test_installed_train_from_an_empty_directory_writes_runs_and_exports_there(trained):
    cwd, result, _, _ = trained
    assert result.returncode == 0, _explain(result)
    for artefact in [
        "runs/mnist_cnn/run-001/metrics.json",
        "exports/mnist_cnn/1/saved_model.pb",
        "exports/mnist_cnn/1/model.onnx",
    ]:
        assert (cwd / artefact).is_file(), f"{artefact} missing under the working directory {cwd}"


def test_installed_train_writes_nothing_into_the_installed_package(trained, fresh: Fresh):
    _, result, before, after = trained
    assert result.returncode == 0, _explain(result)
    package = fresh.site_packages / "kerasline"
    assert not (package / "runs").exists() and not (package / "exports").exists()
    assert after == before, f"training wrote into {package}: {sorted(after - before)}"


# ---------------------------------------------------------------------------------------------------------------------
# 2. The Dockerfile and the manifests agree with pyproject.toml and the CLI (parsed: no Docker engine here)
# ---------------------------------------------------------------------------------------------------------------------


def _dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def _stages() -> list[dict]:
    stages: list[dict] = []
    for keyword, args in _dockerfile_instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append({"image": words[0], "name": name, "instructions": []})
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1]["instructions"].append((keyword, args))
    assert stages, "the Dockerfile has no FROM"
    return stages


def _copies(stage: dict) -> list[tuple[dict, list[str], str]]:
    """(flags, sources, destination) of each COPY/ADD, exec or shell form."""
    copies = []
    for keyword, args in stage["instructions"]:
        if keyword not in ("COPY", "ADD"):
            continue
        words = shlex.split(args)
        flags = dict(w[2:].partition("=")[::2] for w in words if w.startswith("--"))
        words = [w for w in words if not w.startswith("--")]
        if args.lstrip().startswith("["):
            words = json.loads(args)
        copies.append((flags, [w.removeprefix("./").rstrip("/") or "." for w in words[:-1]], words[-1]))
    return copies


def _runs(stage: dict) -> list[str]:
    return [args for keyword, args in stage["instructions"] if keyword == "RUN"]


def _build_stage(stages: list[dict]) -> dict:
    building = [s for s in stages if any(re.search(r"pip wheel|-m build\b", run) for run in _runs(s))]
    assert len(building) == 1, "expected exactly one stage that builds the wheel (pip wheel / python -m build)"
    return building[0]


def _documented_build_tags() -> set[str]:
    return set(re.findall(r"docker build\b[^\n]*?\s-t\s+kerasline:(\S+)", (ROOT / "Dockerfile").read_text()))


def test_dockerfile_base_images_are_pinned_python_versions_that_satisfy_requires_python():
    stage_names = set()
    requires = SpecifierSet(PYPROJECT["project"]["requires-python"])
    for stage in _stages():
        image = stage["image"]
        if image in stage_names:  # FROM an earlier stage
            continue
        if stage["name"]:
            stage_names.add(stage["name"])
        repository, _, tag = image.partition("@")[0].rpartition(":") if ":" in image else (image, "", "")
        assert tag and tag != "latest", f"FROM {image}: pin an exact tag"
        version = re.match(r"(\d+\.\d+\.\d+)(?![\d.])", tag)
        assert version, f"FROM {image}: the tag should start with an exact Python version (X.Y.Z)"
        assert repository.rsplit("/", 1)[-1] == "python", f"FROM {image}: expected an official python image"
        assert requires.contains(version.group(1)), f"FROM {image}: Python {version.group(1)} is not {requires}"


def test_dockerfile_build_stage_copies_every_package_source_folder_and_the_build_files():
    copied = {src for _, sources, _ in _copies(_build_stage(_stages())) for src in sources}
    needed = {"pyproject.toml", "README.md", "kerasline", *PACKAGE_DIRS.values()}
    if "." not in copied:  # COPY . . would take them all
        assert not needed - copied, f"the wheel build stage does not COPY {sorted(needed - copied)}"


def test_dockerignore_excludes_none_of_the_files_the_wheel_is_built_from():
    ignore = ROOT / ".dockerignore"
    if not ignore.exists():
        return
    patterns = [
        line.strip().rstrip("/")
        for line in ignore.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith(("#", "!"))
    ]
    needed = [
        "pyproject.toml",
        "README.md",
        "constraints.txt",
        "kerasline/cli.py",
        "experiments/mnist_cnn.toml",
        "data/mnist_8k.npz",
        "data/isbi2012_membrane/image/0.png",
        *PACKAGE_DIRS.values(),
    ]
    for path in needed:
        parents = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
        hits = [p for p in patterns for part in parents if fnmatch.fnmatchcase(part, p.removeprefix("/"))]
        assert not hits, f".dockerignore pattern(s) {hits} leave {path} out of the build context"


def test_dockerfile_installs_the_versioned_wheel_it_built_with_constraints(wheel: Path):
    stages = _stages()
    build, final = _build_stage(stages), stages[-1]
    assert final is not build, "the image should install the wheel in a stage of its own"
    wheel_dirs = [m.group(1) for run in _runs(build) for m in [re.search(r"(?:--wheel-dir|-w)[ =](\S+)", run)] if m]
    assert wheel_dirs, "the build stage's `pip wheel` names no --wheel-dir"

    installs = [run for run in _runs(final) if re.search(r"pip install", run)]
    assert len(installs) == 1, "expected one `pip install` in the final stage"
    install = installs[0]
    wheels = re.findall(r"(\S*kerasline-[^\s/]+\.whl)", install)
    assert [Path(w).name for w in wheels] == [WHEEL_NAME], f"the image installs {wheels}"
    assert wheel.name == WHEEL_NAME, f"the checkout builds {wheel.name}, the Dockerfile installs {WHEEL_NAME}"

    build_refs = {build["name"], str(stages.index(build))}
    from_build = [(sources, dest) for flags, sources, dest in _copies(final) if flags.get("from") in build_refs]
    assert any(
        src.rstrip("/") == wheel_dirs[0].rstrip("/") and wheels[0].startswith(dest.rstrip("/") + "/")
        for sources, dest in from_build
        for src in ["/" + s.lstrip("/") for s in sources]
    ), f"the installed {wheels[0]} is not what COPY --from={build['name']} {wheel_dirs[0]} brings in"

    constraint = re.search(r"(?:-c|--constraint)[ =](\S+)", install)
    assert constraint, "the final `pip install` does not use constraints.txt (-c)"
    assert any(
        "constraints.txt" in sources
        and (dest == constraint.group(1) or dest.rstrip("/") + "/constraints.txt" == constraint.group(1))
        for _, sources, dest in _copies(final)
    ), f"-c {constraint.group(1)} is not where the final stage COPYs constraints.txt"


def test_constraints_agree_with_the_exact_pins_in_pyproject():
    """`pip install -c constraints.txt kerasline-*.whl` fails if the two pin one package differently."""
    constraints = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            constraints[canonicalize_name(name.split("[")[0])] = version.split(";")[0].strip()
    for requirement in PYPROJECT["project"]["dependencies"]:
        name, sep, version = requirement.split(";")[0].partition("==")
        name = canonicalize_name(name.split("[")[0].strip())
        if sep and name in constraints:
            assert constraints[name] == version.strip(), (
                f"{name}: pyproject =={version}, constraints.txt =={constraints[name]}"
            )


def test_dockerfile_entrypoint_is_the_kerasline_console_script():
    entrypoints = [
        args for keyword, args in _dockerfile_instructions((ROOT / "Dockerfile").read_text()) if keyword == "ENTRYPOINT"
    ]
    assert entrypoints, "the Dockerfile has no ENTRYPOINT"
    entrypoint = entrypoints[-1]
    assert entrypoint.startswith("["), "use the exec form, so that signals (preemption: SIGTERM) reach kerasline"
    command = json.loads(entrypoint)
    assert command[0] in SCRIPTS, f"ENTRYPOINT {command}: not a console script of pyproject ({sorted(SCRIPTS)})"
    assert SCRIPTS[command[0]] == "kerasline.cli:main"


def _manifest_documents() -> list[tuple[Path, object]]:
    return [(path, doc) for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _containers(node) -> list[dict]:
    """Every mapping with an `image` (Kubernetes containers, Compose services), at any depth."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("image"), str):
            found.append(node)
        for value in node.values():
            found += _containers(value)
    elif isinstance(node, list):
        for value in node:
            found += _containers(value)
    return found


def _is_kerasline_image(image: str) -> bool:
    return image.partition("@")[0].rsplit(":", 1)[0].rsplit("/", 1)[-1] == "kerasline"


def test_manifest_kerasline_images_use_the_pyproject_version_and_the_documented_build_tag():
    build_tags = _documented_build_tags()
    assert build_tags == {VERSION}, (
        f"the Dockerfile documents `docker build -t kerasline:TAG` with TAG {sorted(build_tags)}, not {VERSION}"
    )
    images = [(path, c["image"]) for path, doc in _manifest_documents() for c in _containers(doc)]
    kerasline_images = [(path, image) for path, image in images if _is_kerasline_image(image)]
    assert kerasline_images, f"no manifest in {[str(p.relative_to(ROOT)) for p in MANIFESTS]} runs the kerasline image"
    for path, image in kerasline_images:
        assert image == f"kerasline:{VERSION}", f"{path.relative_to(ROOT)}: image {image}, pyproject is {VERSION}"
    for path in MANIFESTS:  # a `docker build -t kerasline:TAG` a manifest's comments tell you to run
        for tag in re.findall(r"docker build\b[^\n]*?\s-t\s+kerasline:([^\s`'\"]+)", path.read_text()):
            assert tag == VERSION, f"{path.relative_to(ROOT)} documents `docker build -t kerasline:{tag}`"


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from kerasline.cli import _parser

    actions = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(actions) == 1
    return dict(actions[0].choices)


def _invocations(container: dict) -> list[list[str]]:
    """The words after `kerasline` in each invocation a container runs: in its shell text, or its args when the
    kerasline image's ENTRYPOINT (kerasline) runs them."""

    def words(value) -> list[str]:
        return [value] if isinstance(value, str) else [str(v) for v in value or []]

    command, args = words(container.get("command")), words(container.get("args"))
    if _is_kerasline_image(container["image"]) and not command and args and "\n" not in args[0]:
        return [args]
    env = {e["name"]: str(e.get("value", "")) for e in container.get("env") or [] if isinstance(e, dict)}
    invocations = []
    for text in command + args:
        for line in text.splitlines():
            for match in re.finditer(r"(?<![\w$/.-])kerasline\s+([^;|&)`\n]*)", line.split(" #")[0]):
                tail = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), m.group(0)), match.group(1))
                invocations.append(shlex.split(tail.replace('"', " ").replace("'", " ")))
    return invocations


def test_manifest_kerasline_commands_are_real_subcommands_and_options_of_the_cli():
    subcommands = _subcommands()
    experiments = {p.stem for p in (ROOT / "experiments").glob("*.toml")}
    seen = []
    for path, doc in _manifest_documents():
        for container in _containers(doc):
            for words in _invocations(container):
                where = f"{path.relative_to(ROOT)}: kerasline {' '.join(words)}"
                assert words, f"{where}: no subcommand"
                name, rest = words[0], words[1:]
                if name.startswith("-"):  # kerasline --help / --version
                    continue
                assert name in subcommands, f"{where}: {name!r} is not one of {sorted(subcommands)}"
                sub = subcommands[name]
                for option in (w.split("=")[0] for w in rest if w.startswith("--")):
                    assert option in sub._option_string_actions, f"{where}: {name} has no option {option}"
                takes_experiment = any(a.dest == "experiment" for a in sub._actions)
                positional = [w for w in rest if not w.startswith("-") and "=" not in w]
                if takes_experiment and positional and re.fullmatch(r"\w+", positional[0]):
                    option_values = {rest[i + 1] for i, w in enumerate(rest[:-1]) if w.startswith("--")}
                    if positional[0] not in option_values:
                        assert positional[0] in experiments, f"{where}: no shipped experiment {positional[0]!r}"
                seen.append(name)
    assert seen, "no manifest runs a kerasline subcommand: the parser found nothing to check"
