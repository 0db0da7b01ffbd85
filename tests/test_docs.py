"""The README and docs/: every relative link resolves (file and heading), and the README's
command list names every command (one line each; the man page is the reference)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from memcgctl.cli import LAZY_COMMANDS

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def anchors(page: Path) -> set[str]:
    """The ids GitHub gives the page's headings (lower case, punctuation dropped, spaces
    to hyphens; a repeated heading gets -1, -2, …)."""
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if m := re.match(r"#{1,6} (.*)", line):
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for link in LINK.findall(FENCE.sub("", page.read_text())):
        if re.match(r"[a-z]+:", link):  # https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no heading #{anchor} in {target.relative_to(ROOT)}")
    assert broken == []


def test_the_anchor_rule_is_githubs() -> None:
    page = ROOT / "docs" / "commands.md"
    assert {"json-for-scripts", "a-live-view-memcgctl-top", "cgroup-v1-and-v2"} <= anchors(page)


def test_readme_lists_every_command_and_points_at_the_man_page() -> None:
    text = (ROOT / "README.md").read_text().split("\n## Commands\n", 1)[1].split("\n## ", 1)[0]
    listed = {m.group(1) for m in re.finditer(r"^\| `([a-z-]+)", text, re.M)}
    listed |= {m.group(1) for m in re.finditer(r"^\| `[a-z-]+[^|]*?, `([a-z-]+)", text, re.M)}
    assert set(LAZY_COMMANDS) <= listed, f"add a line for {sorted(set(LAZY_COMMANDS) - listed)}"
    assert "man memcgctl" in text and "man/memcgctl.1" in text


def test_every_doc_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    assert [p.name for p in PAGES[1:] if f"](docs/{p.name})" not in readme] == []
