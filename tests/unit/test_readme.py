"""The README and docs/ tell the truth about the code: the settings tables are the settings
models, every relative link leads somewhere, every repository path and `make` target they name
exists, docs/worker.md's table names every module of the worker, and every section the code's
docstrings and comments cite is still there."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from collections.abc import Iterator, Mapping
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
# A path in the repository, from one of its top-level folders: `services/worker/offsets.py`,
# `deploy/kafka/bin/*.sh`, `tests/e2e/`. run/ is made at run time, so it is not one.
REPOSITORY_PATH = re.compile(
    r"(?<![\w./-])((?:services|shared|tests|deploy|docs|\.ci)/[\w.*/-]*[\w*/])"
)
# Where the code cites a page's section: (README, "What it is") or docs/worker.md, "The code".
SECTION_CITED = re.compile(r"\b(README|docs/[\w-]+\.md)(?:'s)?,?\s+\"([^\"]+)\"")
CODE_ROOTS = ("services", "shared", "deploy")
WORKER = PROJECT_ROOT / "services" / "worker"
WORKER_CODE_SECTION = "The code"


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


def exists_in_repository(path: str) -> bool:
    if "*" in path:
        return any(PROJECT_ROOT.glob(path))
    return (PROJECT_ROOT / path).exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(PROJECT_ROOT)))
def test_every_repository_path_the_docs_name_exists(page: Path) -> None:
    """Paths in code spans and code blocks; those in links are the link test's."""
    _, code = prose_and_code(page)
    missing = sorted(
        {
            path
            for line in code
            for path in REPOSITORY_PATH.findall(line)
            if not exists_in_repository(path)
        }
    )

    assert not missing, (
        f"{page.relative_to(PROJECT_ROOT)} names paths that are not in the repository: {missing}; "
        "write each one's current path, or drop the mention"
    )


def comments_and_docstrings(source: str) -> Iterator[str]:
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring:
                yield docstring
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.string


def code_files() -> list[Path]:
    return sorted(path for root in CODE_ROOTS for path in (PROJECT_ROOT / root).rglob("*.py"))


def test_every_repository_path_named_in_docstrings_and_comments_exists() -> None:
    missing = sorted(
        f"{module.relative_to(PROJECT_ROOT)}: {path}"
        for module in code_files()
        for text in comments_and_docstrings(module.read_text())
        for path in REPOSITORY_PATH.findall(text)
        if not exists_in_repository(path)
    )

    assert not missing, (
        f"docstrings and comments name paths that are not in the repository: {missing}; write "
        "each one's current path, or drop the mention"
    )


def test_every_section_the_code_cites_exists() -> None:
    missing = sorted(
        f"{module.relative_to(PROJECT_ROOT)} cites {page!r}, section {section!r}"
        for module in code_files()
        for text in comments_and_docstrings(module.read_text())
        for page, section in SECTION_CITED.findall(" ".join(text.split()))
        if anchor(section)
        not in anchors(PROJECT_ROOT / ("README.md" if page == "README" else page))
    )

    assert not missing, (
        f"the code cites sections that are not there: {missing}; cite the page and section "
        "that hold it now (a heading, word for word)"
    )


def worker_modules() -> set[str]:
    """services/worker's modules and packages, as docs/worker.md's table names them."""
    modules = {path.name for path in WORKER.glob("*.py") if path.name != "__init__.py"}
    packages = {f"{path.parent.name}/" for path in WORKER.glob("*/__init__.py")}
    return modules | packages


def names_in_the_worker_code_table() -> set[str]:
    """The code spans of the first column of docs/worker.md's table under "The code"."""
    names: set[str] = set()
    in_section = False
    for line in (DOCS / "worker.md").read_text().splitlines():
        heading = HEADING.match(line)
        if heading:
            in_section = heading.group(2) == WORKER_CODE_SECTION
        elif in_section and line.startswith("|"):
            first_cell = line.split("|")[1]
            names.update(span for _, span in CODE_SPAN.findall(first_cell))
    return names


def test_the_worker_page_names_every_module_of_the_worker() -> None:
    named = names_in_the_worker_code_table()

    unnamed = sorted(worker_modules() - named)
    stale = sorted(named - worker_modules())

    table = f'docs/worker.md\'s table under "## {WORKER_CODE_SECTION}"'
    assert named, f"{table} is missing: it lists every module of services/worker/ with its role"
    assert not unnamed, f"add these modules of services/worker/ to {table}, a row each: {unnamed}"
    assert not stale, (
        f"{table} names modules services/worker/ does not have: {stale}; write their current "
        "names, or drop their rows"
    )
