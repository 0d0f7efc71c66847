"""README.md is an entry page: small, and every link in it leads to a file of the repository
(and, for a Markdown file with an anchor, to a heading of that file). The site in docs/ is
checked by ``make docs`` (``mkdocs build --strict``); the configuration reference by
test_config_reference.py."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
MAX_README_BYTES = 15_000

LINK = re.compile(r"\]\(([^)\s]+)\)")


def _outside_code(text: str) -> str:
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    # the anchors GitHub and MkDocs give a heading (they agree on this project's headings)
    text = unicodedata.normalize("NFKD", heading.replace("`", ""))
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(md: Path) -> set[str]:
    body = re.sub(r"^```.*?^```", "", md.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", body, flags=re.M)}


def readme_links() -> list[str]:
    return LINK.findall(_outside_code(README.read_text(encoding="utf-8")))


def test_readme_is_an_entry_page():
    size = README.stat().st_size
    assert size <= MAX_README_BYTES, (
        f"README.md is {size} bytes (at most {MAX_README_BYTES}): move reference text to docs/"
    )


def test_readme_links_resolve():
    links = readme_links()
    assert any(link.startswith("docs/") for link in links), links
    broken = []
    for link in links:
        if re.match(r"[a-z]+:", link):  # http:, https:, mailto:
            continue
        path, _, anchor = link.partition("#")
        target = (README.parent / path).resolve() if path else README
        if not target.is_file():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{link}: no heading with that anchor in {path or 'README.md'}")
    assert not broken, "README.md links that lead nowhere:\n" + "\n".join(broken)


def test_link_check_sees_a_broken_link(tmp_path):
    # the checks above read links and anchors the way they are written in README.md
    page = tmp_path / "p.md"
    page.write_text("# A `[main]` title\n\n```\n# not a heading\n```\n## Two: words\n")
    assert _anchors(page) == {"a-main-title", "two-words"}
    text = "[a](docs/x.md) `[b](no.md)`\n```\n[c](no2.md)\n```\n[d](https://e.example/)\n"
    assert LINK.findall(_outside_code(text)) == ["docs/x.md", "https://e.example/"]
