"""The package: ``python -m build`` without a warning, a wheel with the whole app, the README's install line.

One build (sdist, then the wheel from the sdist, as ``python -m build`` does)
and two installs into a temp dir, without network: a few seconds.
"""

from __future__ import annotations

import ast
import email
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import notifications
from tests.servers import PYTHON, ROOT

PACKAGE = ROOT / "notifications"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Modules of the app that only an extra's users import: they may import what the extra installs.
EXTRA_MODULES = {
    "notifications/handshake.py": "uvicorn",  # `--http notifications.handshake:HttpProtocol`
    "notifications/watch.py": "uvicorn",  # websockets, which uvicorn[standard] installs
    "notifications/testing/": "testing",
}


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # distutils says "byte-compiling is disabled" on stderr when Python is told not to write
    # bytecode (PYTHONDONTWRITEBYTECODE): a property of the shell, not of the package.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    result = subprocess.run([PYTHON, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The wheel, and everything ``python -m build`` printed (no isolation: the venv has setuptools>=77)."""
    outdir = tmp_path_factory.mktemp("dist")
    result = run("-m", "build", "--no-isolation", "--outdir", str(outdir), str(ROOT))
    [wheel] = outdir.glob("*.whl")
    yield wheel, result.stdout + result.stderr


def source_files() -> set[str]:
    """Every file of the app in the repository (but what git ignores), as a path inside the wheel."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "notifications"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return {name for name in listed if (ROOT / name).is_file()}


def test_building_prints_no_warning(built: tuple[Path, str]) -> None:
    _wheel, output = built

    assert "Successfully built" in output
    assert not [line for line in output.splitlines() if "warning" in line.lower()], output


def test_the_wheel_holds_every_file_of_the_app_and_nothing_else(built: tuple[Path, str]) -> None:
    wheel, _output = built
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())

    app = {name for name in names if not name.startswith("drf_live-")}
    assert app == source_files()
    # What a Django app needs beyond its modules, named so that a failure says which went missing.
    for needed in [
        "notifications/migrations/0001_initial.py",
        "notifications/management/commands/drf_live_outbox.py",
        "notifications/static/notifications/client.js",
        "notifications/static/notifications/reducer.d.ts",
        "notifications/py.typed",
        "notifications/testing/plugin.py",
    ]:
        assert needed in names
    assert f"drf_live-{notifications.__version__}.dist-info/licenses/LICENSE" in names


def test_the_wheels_metadata_names_the_version_license_and_what_the_app_imports(built: tuple[Path, str]) -> None:
    wheel, _output = built
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_string(
            archive.read(f"drf_live-{notifications.__version__}.dist-info/METADATA").decode()
        )

    assert metadata["Name"] == "drf-live"
    assert metadata["Version"] == notifications.__version__
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert "Framework :: Django" in metadata.get_all("Classifier")
    required = {
        canonicalize_name(Requirement(line).name)
        for line in metadata.get_all("Requires-Dist")
        if Requirement(line).marker is None
    }
    assert imported_distributions() <= required <= imported_distributions() | imported_distributions(lazily=True)
    assert {"uvicorn", "example", "testing", "postgres", "asyncapi", "metrics"} <= set(
        metadata.get_all("Provides-Extra")
    )


def imported_distributions(*, lazily: bool = False) -> set[str]:
    """The distributions the app's modules import at import time (``lazily``: inside functions only).

    An import inside a function is one an optional feature makes when it is
    used (the AsyncAPI document, the metrics): its distribution is an extra's.
    """
    distributions = packages_distributions()
    found: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        if any(relative.startswith(prefix) for prefix in EXTRA_MODULES):
            continue
        tree = ast.parse(path.read_text())
        in_functions = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if (id(node) in in_functions) != lazily:
                continue
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top in sys.stdlib_module_names or top == "notifications":
                    continue
                found.update(canonicalize_name(name) for name in distributions[top])
    return found


def extras_distributions() -> set[str]:
    """Every distribution an extra of the package names (and what they bring, as installed here)."""
    named = {
        canonicalize_name(Requirement(line).name)
        for lines in PYPROJECT["project"]["optional-dependencies"].values()
        for line in lines
    }
    brought: set[str] = set()
    for name in named - {"drf-live"}:
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        brought.update(canonicalize_name(Requirement(line).name) for line in requires if ";" not in line)
    return named | brought


def test_what_the_app_imports_only_when_used_is_in_an_extra() -> None:
    declared = {canonicalize_name(Requirement(line).name) for line in PYPROJECT["project"]["dependencies"]}

    assert imported_distributions(lazily=True) - declared <= extras_distributions()


def test_the_dependencies_are_what_the_app_imports() -> None:
    declared = {canonicalize_name(Requirement(line).name) for line in PYPROJECT["project"]["dependencies"]}

    # Everything imported when the app loads, and nothing the app does not import at all.
    assert imported_distributions() <= declared <= imported_distributions() | imported_distributions(lazily=True)


def test_the_readmes_install_line_installs_the_app_from_a_path(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    assert re.search(r'^pip install "/path/to/drf-live\[uvicorn\]"$', readme, flags=re.MULTILINE)
    assert "not on a package index" in readme

    # The line as written, with this checkout for /path/to/drf-live; --no-deps and --no-index keep
    # it offline (the dependencies are the venv's), --target keeps it out of the venv.
    target = tmp_path / "site"
    run("-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
        "--target", str(target), f"{ROOT}[uvicorn]")  # fmt: skip

    installed = {path.relative_to(target).as_posix() for path in target.rglob("*") if path.is_file()}
    assert source_files() <= installed
    [dist_info] = target.glob("drf_live-*.dist-info")
    assert dist_info.name == f"drf_live-{notifications.__version__}.dist-info"
