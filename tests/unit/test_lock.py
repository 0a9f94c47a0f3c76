"""requirements.lock keeps pace with pyproject.toml: every dependency declared there is pinned
in the lock at a version its range allows, so the two cannot drift apart unnoticed."""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement
from packaging.utils import NormalizedName, canonicalize_name
from packaging.version import Version

from shared.settings import PROJECT_ROOT

PYPROJECT = PROJECT_ROOT / "pyproject.toml"
LOCK = PROJECT_ROOT / "requirements.lock"


def declared_requirements() -> list[Requirement]:
    """The build backend, the runtime dependencies and the `dev` extra: what `make` installs."""
    pyproject = tomllib.loads(PYPROJECT.read_text())
    declared = [
        *pyproject["build-system"]["requires"],
        *pyproject["project"]["dependencies"],
        *pyproject["project"]["optional-dependencies"]["dev"],
    ]
    return [Requirement(line) for line in declared]


def locked_versions() -> dict[NormalizedName, list[Version]]:
    """Each package's pins: a line `name==version [; marker] \\` starts a pin, its hashes follow.

    A universal lock may pin one package twice, under two markers; each pin must fit."""
    pinned: dict[NormalizedName, list[Version]] = {}
    for line in LOCK.read_text().splitlines():
        if not line or line[0].isspace() or line.startswith("#"):
            continue
        pin = Requirement(line.removesuffix("\\"))
        (specifier,) = pin.specifier
        assert specifier.operator == "==", f"{line!r} is not pinned to one version"
        pinned.setdefault(canonicalize_name(pin.name), []).append(Version(specifier.version))
    return pinned


@pytest.mark.parametrize("requirement", declared_requirements(), ids=str)
def test_every_declared_dependency_is_locked_within_its_range(requirement: Requirement) -> None:
    versions = locked_versions().get(canonicalize_name(requirement.name), [])

    assert versions, f"{requirement.name} is not in requirements.lock: run `make lock`"
    outside = [str(v) for v in versions if not requirement.specifier.contains(v, prereleases=True)]
    assert not outside, (
        f"requirements.lock pins {requirement.name}=={outside[0]}, outside pyproject.toml's "
        f"{requirement.specifier}: run `make lock`"
    )
