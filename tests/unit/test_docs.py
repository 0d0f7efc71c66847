"""README.md is an entry page: small, and every link in it leads to a file of the repository
(and, for a Markdown file with an anchor, to a heading of that file). The site in docs/ is
checked by ``make docs`` (``mkdocs build --strict``)."""

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


# --- every configuration key is documented --------------------------------------------------

#: the pages that document the keys: the reference, and the pages of the features whose keys
#: it points to (``ssl_*``, ``gzip_*``/``brotli_*``, the proxy's)
KEY_PAGES = ("configuration.md", "tls.md", "compression.md", "proxy.md", "edge-library.md")


def _code_words() -> set[str]:
    words: set[str] = set()
    for name in KEY_PAGES:
        text = (ROOT / "docs" / name).read_text(encoding="utf-8")
        for span in re.findall(r"`([^`\n]+)`", text) + re.findall(
            r"^```.*?^```", text, re.M | re.S
        ):
            words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", span))
    return words


def _schema_keys() -> set[tuple[str, str]]:
    import msgspec.inspect as mi

    from edgeworker import config

    found: set[tuple[str, str]] = set()
    seen: set[type] = set()

    def walk(info: object) -> None:
        if isinstance(info, mi.StructType):
            if info.cls in seen:
                return
            seen.add(info.cls)
            for f in info.fields:
                if not f.encode_name.startswith("__"):  # set by the loader, not a key
                    found.add((info.cls.__name__, f.encode_name))
                walk(f.type)
        elif isinstance(info, mi.UnionType):
            for t in info.types:
                walk(t)
        elif isinstance(info, mi.DictType):
            walk(info.value_type)
        elif isinstance(info, (mi.ListType, mi.VarTupleType, mi.SetType, mi.FrozenSetType)):
            walk(info.item_type)
        elif isinstance(info, mi.TupleType):
            for t in info.item_types:
                walk(t)

    roots = [config.Main, config.Http, config.Server, *(t.schema for t in config._TABLES)]
    for root in roots:
        walk(mi.type_info(root))
    return found


def test_every_schema_key_is_documented():
    keys = _schema_keys()
    # the walk reaches the nested tables too (a location's limit, jwt, return; upstream servers)
    assert {("Limit", "rate"), ("Jwt", "algorithms"), ("UpstreamServer", "max_conns")} <= keys
    words = _code_words()
    missing = sorted(f"{table}.{key}" for table, key in keys if key not in words)
    assert not missing, f"keys no page of {KEY_PAGES} names in code: {missing}"


def test_every_key_of_the_reference_config_is_documented():
    import tomllib

    # tables whose keys are names the user chooses: header names, zone names, NAME of
    # [upstream.NAME] / [redis.NAME] (whose own keys are checked)
    free = {"add_header", "proxy_set_header", "claims_to_headers", "shared_dict"}
    named = {"upstream", "redis"}

    def walk(node: object, path: str):
        if isinstance(node, list):
            for item in node:
                yield from walk(item, path)
        elif isinstance(node, dict):
            for k, v in node.items():
                key_path = f"{path}.{k}" if path else k
                if path in named:  # [upstream.NAME]: NAME is not a key
                    yield from walk(v, key_path)
                    continue
                yield key_path, k
                if k not in free:
                    yield from walk(v, key_path)

    doc = tomllib.loads((ROOT / "config" / "edgeworker.toml").read_text(encoding="utf-8"))
    paths = list(walk(doc, ""))
    assert ("main.workers", "workers") in paths and any(k == "servers" for _p, k in paths)
    words = _code_words()
    missing = sorted(path for path, key in paths if key not in words)
    assert not missing, f"config/edgeworker.toml keys the docs do not name: {missing}"
