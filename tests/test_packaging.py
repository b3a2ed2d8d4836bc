"""pyproject.toml says what qroute was tested with, and installs without warnings."""

from __future__ import annotations

import re
import sys

import pytest

from conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]


def _requirements() -> list[str]:
    extras = [req for reqs in PROJECT["optional-dependencies"].values() for req in reqs]
    return PROJECT["dependencies"] + extras


@pytest.mark.parametrize("requirement", _requirements())
def test_every_dependency_has_a_tested_range(requirement):
    """A lower and an upper bound (or an exact pin): a new major release must not reach users
    untested (typer 0.26 replaced click and broke every usage error)."""
    spec = requirement.split(";")[0]
    assert "==" in spec or (">=" in spec and "<" in spec.replace("<=", "")), requirement


@pytest.mark.parametrize("requirement", [r for r in _requirements() if ";" not in r])
def test_installed_versions_are_inside_the_declared_ranges(requirement):
    """What this environment runs (and the tests test) is what pyproject.toml declares."""
    from importlib import metadata

    requirements = pytest.importorskip("packaging.requirements")
    req = requirements.Requirement(requirement)
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        pytest.skip(f"{req.name} is not installed (an extra not chosen)")
    assert req.specifier.contains(installed, prereleases=True), f"{req.name} {installed} not in {req.specifier}"


def test_python_310_gets_tomli():
    assert PROJECT["requires-python"] == ">=3.10"
    markers = [r for r in PROJECT["dependencies"] if re.match(r"tomli\b", r)]
    assert markers and "python_version < '3.11'" in markers[0].replace('"', "'")


def test_license_is_an_spdx_string_for_a_warning_free_build():
    """A `license = { text = ... }` table makes setuptools >= 77 print a deprecation warning
    on every install; the SPDX string needs setuptools >= 77 to build."""
    assert PROJECT["license"] == "Apache-2.0"
    assert "setuptools>=77" in PYPROJECT["build-system"]["requires"]


def test_onnx_tests_run_with_the_test_extra():
    assert any(re.match(r"onnx\b", r) for r in PROJECT["optional-dependencies"]["test"])
