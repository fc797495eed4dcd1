"""The repository stands alone and its documentation matches the code: a licence, the design notes inside
the repository, a README whose contents list, route table and Make variables cover what exists, and
measurements that speak of the machine and the code only."""

from __future__ import annotations

import re
from pathlib import Path

from vidfactory.api.app import create_app
from vidfactory.settings import Settings

root = Path(__file__).resolve().parent.parent
readme = (root / "README.md").read_text()


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def test_the_licence_is_apache_2():
    assert "Apache License\n                           Version 2.0, January 2004" in (root / "LICENSE").read_text()
    assert "License :: OSI Approved :: Apache Software License" in (root / "pyproject.toml").read_text()


def test_the_readme_links_nothing_outside_the_repository():
    assert re.search(r"(?<!\.)\.\./", readme) is None  # "../x" climbs out; ".../{id}" is an ellipsis
    for target in re.findall(r"\]\((?!https?://|#)([^)]+)\)", readme) + ["docs/design.md", "bench/RESULTS.md",
                                                                        "LICENSE"]:
        path, _, heading = target.partition("#")
        assert (root / path).exists(), target
        if heading:
            titles = re.findall(r"^#+ (.+)$", (root / path).read_text(), re.M)
            assert heading in {anchor(title) for title in titles}, target
    assert "docs/design.md" in readme


def test_the_contents_list_every_heading_in_order():
    headings = [(len(level), title) for level, title in re.findall(r"^(##|###) (.+)$", readme, re.M)
                if title != "Contents"]
    listed = re.findall(r"^( *)- \[(.+)\]\(#([^)]+)\)$", section(readme, "Contents"), re.M)
    assert [(2 if not indent else 3, title) for indent, title, _ in listed] == headings
    assert [target for _, _, target in listed] == [anchor(title) for _, title in headings]


def test_every_route_the_server_answers_is_documented(tmp_path):
    table = section(readme, "API routes")
    app = create_app(Settings(data_dir=tmp_path), workers=0)
    documented = set(re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)` \|", table, re.M))
    served = {(method.upper(), path) for path, operations in app.openapi()["paths"].items()
              for method in operations}
    assert served - documented == set(), "routes missing from the README's API routes table"
    assert documented - served == set(), "the README documents routes the server does not answer"
    for page in ("/openapi.json", "/docs", "/docs/oauth2-redirect"):
        assert f"`{page}`" in table


def test_every_make_variable_is_documented():
    variables = re.findall(r"^([A-Z_]+) \?=", (root / "Makefile").read_text(), re.M)
    table = section(readme, "Make targets and variables")
    assert variables and all(f"| `{name}` |" in table for name in variables), variables
    targets = re.findall(r"^([a-z-]+):", (root / "Makefile").read_text(), re.M)
    assert all(f"`make {target}`" in table for target in targets), targets


def test_measurements_and_design_notes_speak_of_the_machine_and_the_code():
    for path in ("bench/RESULTS.md", "docs/design.md"):
        text = (root / path).read_text()
        found = re.findall(r"\b(\w+ other sessions|\d+ sessions|this task|issues? \d+|helpers?|the lead|lent to|device tool)\b", text, re.I)
        assert found == [], (path, found)
