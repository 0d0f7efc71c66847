"""MkDocs hook: links from docs/ to files of the repository outside docs/.

The pages link repository files the way GitHub resolves them (``../SECURITY.md``,
``../bench/RESULTS.md``, ``../config/examples/hello.toml``), so the same Markdown reads well on
GitHub and in the built site. MkDocs only knows files under ``docs/``: this hook checks that each
such target exists (a missing one fails the build, naming the page and the link), copies it into
the site under ``repo/`` (Markdown files become pages there, outside the navigation) and points
the link at that copy.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

# [text](target) outside code; the target has no scheme and no leading "/" or "#"
LINK = re.compile(r"\]\((?!https?:|mailto:|#|/)([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")
PREFIX = "repo"


def _outside_links(text: str):
    fenced = False
    for line in text.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        # inline code spans never hold links
        yield from LINK.finditer(re.sub(r"`[^`]*`", "", line))


def _repo_target(src_uri: str, target: str) -> str | None:
    """The repository path of a link that leaves docs/, else None."""
    path = target.split("#", 1)[0]
    if not path:
        return None
    joined = posixpath.normpath(posixpath.join("docs", posixpath.dirname(src_uri), path))
    if joined == "docs" or joined.startswith("docs/"):
        return None
    return joined


def on_files(files, config):
    root = Path(config["config_file_path"]).parent
    docs = Path(config["docs_dir"])
    wanted: dict[str, str] = {}
    for md in sorted(docs.rglob("*.md")):
        src_uri = md.relative_to(docs).as_posix()
        for m in _outside_links(md.read_text(encoding="utf-8")):
            target = _repo_target(src_uri, m.group(1))
            if target is None:
                continue
            if target.startswith("../") or not (root / target).is_file():
                raise PluginError(f"docs/{src_uri}: link to {m.group(1)!r}: no such file {target}")
            wanted[target] = src_uri
    for target in sorted(wanted):
        files.append(File.generated(config, f"{PREFIX}/{target}", abs_src_path=str(root / target)))
    return files


def on_page_markdown(markdown, page, config, files):
    src_uri = page.file.src_uri
    if src_uri.startswith(PREFIX + "/"):
        # a repository file shown as a page: its own links are relative to its folder in the
        # repository; those that do not resolve among the copies are left as text
        return _rewrite_copied(markdown, src_uri, files)

    def fix(m: re.Match) -> str:
        target = _repo_target(src_uri, m.group(1))
        if target is None:
            return m.group(0)
        anchor = m.group(1)[len(m.group(1).split("#", 1)[0]) :]
        rel = posixpath.relpath(f"{PREFIX}/{target}", posixpath.dirname(src_uri) or ".")
        return f"]({rel}{anchor})"

    return _sub_outside_code(markdown, fix)


def _rewrite_copied(markdown: str, src_uri: str, files) -> str:
    here = posixpath.dirname(src_uri[len(PREFIX) + 1 :])
    known = {f.src_uri for f in files}

    def fix(m: re.Match) -> str:
        raw = m.group(1)
        path, _, anchor = raw.partition("#")
        repo_path = posixpath.normpath(posixpath.join(here, path))
        if repo_path == "README.md":
            return f"]({posixpath.relpath('index.md', posixpath.dirname(src_uri))})"
        if repo_path.startswith("docs/") and repo_path[5:] in known:
            rel = posixpath.relpath(repo_path[5:], posixpath.dirname(src_uri))
            return f"]({rel}{'#' + anchor if anchor else ''})"
        if f"{PREFIX}/{repo_path}" in known:
            return m.group(0)
        raise PluginError(f"{src_uri[len(PREFIX) + 1 :]}: link to {raw!r} is not part of the site")

    return _sub_outside_code(markdown, fix)


def _sub_outside_code(markdown: str, fix) -> str:
    out, fenced = [], False
    for line in markdown.split("\n"):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            parts = re.split(r"(`[^`]*`)", line)
            line = "".join(p if p.startswith("`") else LINK.sub(fix, p) for p in parts)
        out.append(line)
    return "\n".join(out)
