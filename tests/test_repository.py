"""The repository stands alone: a fresh clone has everything its tests and citations need.

Nothing may read or point to a folder beside the clone (fixtures live in tests/data), and every
citation of a section of docs/ in the code, tests, benchmarks and README names a heading that
exists there, so the docs and the code they explain stay in step.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(rb"\.\./shared|shared/(?:data|SPEC|DESIGN|STYLE)")
UNSHIPPED_DOC = re.compile(r"\b(?:SPEC|DESIGN|STYLE)(?:\.md)? §")
CITATION = re.compile(r"docs/(\w+)\.md\s+§")
SECTION = re.compile(r"§([0-9A-Z]+(?:\.[0-9]+)*)")
HEADING = re.compile(r"^#{2,}\s+([0-9]+|[A-Z])((?:\.[0-9]+)*)\.?\s", re.MULTILINE)
CITING = ("src/", "tests/", "benchmarks/", "README.md")


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: no list of tracked files")
    return [name for name in out.decode().split("\0") if name]


def sections_of_docs() -> dict[str, set[str]]:
    """Section numbers ("1", "1.2", "A.1") of each page in docs/, by page name."""
    return {doc.stem: {major + minor for major, minor in HEADING.findall(doc.read_text("utf-8"))}
            for doc in (REPO / "docs").glob("*.md")}


def citations(text: str) -> list[tuple[str, str]]:
    """(doc name, section) for each citation and the bare `§N` after it on the same line."""
    found = []
    for match in CITATION.finditer(text):
        line_end = text.find("\n", match.end())
        rest = text[match.end() - 1 : None if line_end < 0 else line_end]
        rest = rest.split("docs/", 1)[0]  # a later citation on the line counts for itself
        found += [(match.group(1), section) for section in SECTION.findall(rest)]
    return found


def test_citations_are_found_with_their_bare_followers():
    text = "x (docs/algorithms.md §1.2 step 3, §2.1; docs/design.md\n    §6) y\nz §9"
    assert citations(text) == [("algorithms", "1.2"), ("algorithms", "2.1"), ("design", "6")]


def test_nothing_points_outside_the_repository(tracked):
    offenders = [name for name in tracked if OUTSIDE.search((REPO / name).read_bytes())]
    assert offenders == [], "these files refer to a folder a clone does not have"


def test_citations_name_docs_in_the_repository(tracked):
    texts = {name: (REPO / name).read_text("utf-8") for name in tracked
             if name.startswith(CITING) and name.endswith((".py", ".md"))}
    stale = [name for name, text in texts.items() if UNSHIPPED_DOC.search(text)]
    assert stale == [], "cite docs/algorithms.md or docs/design.md, not SPEC/DESIGN"
    sections = sections_of_docs()
    missing = sorted({(name, f"docs/{doc}.md §{section}")
                      for name, text in texts.items() for doc, section in citations(text)
                      if section not in sections.get(doc, ())})
    assert missing == []
