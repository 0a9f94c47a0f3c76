"""The README and docs/ tell the truth about the code: the settings tables are the settings
models, every relative link leads somewhere, and every `make` target they name exists."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from deploy.local.settings import LocalSettings
from shared.settings import PROJECT_ROOT, Settings

README = PROJECT_ROOT / "README.md"
DOCS = PROJECT_ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
FRONT_DOOR_BYTES = 12_000

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
LINKED_TEXT = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
URL_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")
SETTING = re.compile(r"`([A-Z][A-Z0-9_]*)`")
# docs/settings.md's section of the settings LocalSettings adds; every other table is Settings'.
LOCAL_SECTION = "The local stack's and the tests' own"
# `make` where a command starts: a line, a span, after `$ ` or `(`, or after VAR=value words.
MAKE_TARGET = re.compile(r"(?:^\s*(?:[A-Z_]+=\S*\s+)*|\$ |\()make ([a-z][a-z0-9-]*)")


def prose_and_code(page: Path) -> tuple[list[str], list[str]]:
    """The page's lines outside fenced code blocks, and its code: fenced blocks and code spans."""
    prose: list[str] = []
    code: list[str] = []
    in_fence = False
    for line in page.read_text().splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif in_fence:
            code.append(line)
        else:
            prose.append(line)
            code.extend(span for _, span in CODE_SPAN.findall(line))
    return prose, code


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, without punctuation, dashed."""
    text = LINKED_TEXT.sub(r"\1", heading).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    prose, _ = prose_and_code(page)
    for line in prose:
        match = HEADING.match(line)
        if not match:
            continue
        slug = anchor(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    prose, _ = prose_and_code(page)
    targets = []
    for line in prose:
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if not URL_SCHEME.match(target):
                targets.append(target)
    return targets


def linked_files(page: Path) -> set[Path]:
    return {(page.parent / target.partition("#")[0]).resolve() for target in relative_links(page)}


def settings_in_tables() -> tuple[set[str], set[str]]:
    """The variables named in the first column of docs/settings.md's tables: those of the
    deployment's tables, and those of the local stack's and the tests' own section."""
    deployment: set[str] = set()
    local: set[str] = set()
    names = deployment
    for line in (DOCS / "settings.md").read_text().splitlines():
        heading = HEADING.match(line)
        if heading:
            names = local if heading.group(2) == LOCAL_SECTION else deployment
        elif line.startswith("|"):
            first_cell = line.split("|")[1]
            names.update(SETTING.findall(first_cell))
    return deployment, local


def variables(fields: Mapping[str, FieldInfo]) -> set[str]:
    """The fields' environment variables, with the other names a field accepts."""
    names = {name.upper() for name in fields}
    for field in fields.values():
        choices = getattr(field.validation_alias, "choices", [])
        names.update(choice.upper() for choice in choices if isinstance(choice, str))
    return names


def local_fields() -> dict[str, FieldInfo]:
    """The fields LocalSettings adds to Settings: the local stack's and the tests' own."""
    return {
        name: field
        for name, field in LocalSettings.model_fields.items()
        if name not in Settings.model_fields
    }


def test_every_setting_is_in_the_settings_tables() -> None:
    deployment, local = settings_in_tables()

    missing = [name.upper() for name in Settings.model_fields if name.upper() not in deployment]
    missing_local = [name.upper() for name in local_fields() if name.upper() not in local]

    assert not missing, f"add these settings to docs/settings.md's tables: {missing}"
    assert not missing_local, (
        f"add these settings to docs/settings.md's section {LOCAL_SECTION!r}: {missing_local}"
    )


def test_every_variable_in_the_settings_tables_is_a_setting() -> None:
    deployment, local = settings_in_tables()

    stale = sorted(deployment - variables(Settings.model_fields))
    stale_local = sorted(local - variables(local_fields()))

    assert not stale, (
        f"docs/settings.md's tables document variables Settings does not read: {stale}"
    )
    assert not stale_local, (
        f"docs/settings.md's section {LOCAL_SECTION!r} documents variables that are not "
        f"LocalSettings' own: {stale_local}"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(PROJECT_ROOT)))
def test_every_relative_link_leads_to_a_file_and_a_heading_that_exist(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path_part, _, fragment = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.is_relative_to(PROJECT_ROOT) or not destination.exists():
            broken.append(f"{target}: no such file")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            broken.append(f"{target}: no such heading in {destination.name}")

    assert not broken, f"{page.relative_to(PROJECT_ROOT)} has broken links: {broken}"


def test_every_docs_page_is_listed_in_the_docs_index() -> None:
    index = DOCS / "README.md"
    listed = linked_files(index)

    unlisted = [page.name for page in DOCS.glob("*.md") if page != index and page not in listed]

    assert not unlisted, f"list these pages in docs/README.md: {unlisted}"


def test_the_readme_links_to_the_docs_index() -> None:
    assert (DOCS / "README.md").resolve() in linked_files(README)


def test_the_readme_stays_a_front_door() -> None:
    size = len(README.read_bytes())

    assert size <= FRONT_DOOR_BYTES, (
        f"README.md is {size} bytes, over {FRONT_DOOR_BYTES}: move the detail to a page in docs/"
    )


def test_every_make_target_the_docs_name_exists() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", makefile, flags=re.MULTILINE))
    unknown: set[str] = set()
    for page in PAGES:
        _, code = prose_and_code(page)
        for line in code:
            unknown.update(
                f"{page.relative_to(PROJECT_ROOT)}: make {name}"
                for name in MAKE_TARGET.findall(line)
                if name not in targets
            )

    assert not unknown, f"no such Makefile targets: {sorted(unknown)}"
