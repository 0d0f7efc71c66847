"""``root``: static files with nginx semantics.

The file is ``root + uri`` (the whole normalized URI is appended, as nginx's ``root``). Rules:

- ``GET`` and ``HEAD`` only; other methods get 405 (nginx).
- A URI ending in ``/`` serves the first existing ``index`` file of that directory; a directory
  without one is 403 (autoindex off); a directory asked without the slash is redirected (301)
  to the URI with a slash; a missing file is 404.
- No escape from the root: the server already resolved ``..`` and encoded dots; a path whose
  real location (symlinks followed) is outside the real root is 403, as is a file that is not
  readable or not a regular file.
- ``Content-Type`` from the ``mimetypes`` module (``default_type`` of the location otherwise),
  ``ETag`` as nginx (``"<hex mtime>-<hex size>"``), ``Last-Modified``; ``If-None-Match``
  (weak comparison, ``*``) and ``If-Modified-Since`` (exact match, nginx's default) give 304.
- ``Range: bytes=…`` with one range gives 206 with ``Content-Range``; an unsatisfiable range
  416 with ``Content-Range: bytes */size``; several ranges, or an ``If-Range`` that does not
  match, give 200 with the whole file (nginx answers multipart; we do not). ``Accept-Ranges``.
- Small files go out in one write; bigger ones with ``os.sendfile`` straight from the page
  cache (zero copy) when the location has no body_filter, else read in 64 KiB pieces through
  the body_filter. With gzip or brotli on, a file that matches is compressed (read in pieces
  when big); a HEAD of a small file gets the compressed length a GET would.

Keys:
    root: static files; the whole URI is appended to it (nginx ``root``)
    index: the files tried, in order, for a URI ending in ``/`` (nginx ``index``)
"""

from __future__ import annotations

import mimetypes
import os
import stat
from collections.abc import Callable
from typing import Any

from .confschema import Context, Feature, PathStr, StrList
from .http.responses import http_date
from .proxy.output import finish, send_head

_SMALL = 32768
_PIECE = 65536

mimetypes.init()


def _content_type(path: str, default: str) -> str:
    ctype, enc = mimetypes.guess_type(path, strict=False)
    if ctype is None or enc is not None:
        return "application/octet-stream" if enc is not None else default
    return ctype  # nginx adds no charset unless configured


def etag(st: os.stat_result) -> str:
    """nginx's ETag: hex mtime (seconds) and hex size."""
    return f'"{int(st.st_mtime):x}-{st.st_size:x}"'


def parse_range(value: str, size: int) -> tuple[int, int] | None | bool:
    """One ``bytes=`` range → ``(start, end)`` inclusive; ``None`` to serve the whole file
    (syntax not understood, or several ranges); ``False`` when unsatisfiable (416)."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not first:
        if not last.isdigit():
            return None
        n = int(last)
        if n == 0:
            return False
        return (max(0, size - n), size - 1) if size else False
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        return False
    return start, min(end, size - 1)


class StaticHandler:
    """Content handler for one location's ``root``."""

    def __init__(self, root: str, index: tuple[str, ...], default_type: str) -> None:
        self.root = root.rstrip("/") or "/"
        self.real_root = os.path.realpath(root)
        self.index = index
        self.default_type = default_type

    def _inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        root = self.real_root
        return real == root or real.startswith(root.rstrip("/") + "/")

    def __call__(self, req: Any) -> None:
        method = req.method
        if method not in ("GET", "HEAD"):
            req.resp_headers["Allow"] = "GET, HEAD"
            req.exit(405)
        uri = req.uri
        path = self.root + uri if uri.startswith("/") else self.root + "/" + uri
        if "\0" in path:
            req.exit(400)
        if uri.endswith("/"):
            found = None
            for name in self.index:
                candidate = path + name
                if os.path.isfile(candidate):
                    found = candidate
                    break
            if found is None:
                if os.path.isdir(path):
                    req.exit(403)
                req.exit(404)
            path = found
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            req.exit(404)
        except NotADirectoryError:
            req.exit(404)
        except PermissionError:
            req.exit(403)
        except OSError:
            req.exit(404)
        try:
            self._serve(req, fd, path)
        finally:
            os.close(fd)

    def _serve(self, req: Any, fd: int, path: str) -> None:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            location = req.uri + "/"
            if req.query_string:
                location += "?" + req.query_string
            req.resp_headers["Location"] = location
            req.exit(301)
        if not stat.S_ISREG(st.st_mode):
            req.exit(403)
        if not self._inside(path):
            req.exit(403)  # a symlink pointing out of the root
        size = st.st_size
        tag = etag(st)
        modified = http_date(st.st_mtime)
        h = req.headers
        rh = req.resp_headers
        rh["ETag"] = tag
        rh["Last-Modified"] = modified
        rh["Accept-Ranges"] = "bytes"
        req.content_type = _content_type(path, self.default_type)
        inm = h.get("if-none-match")
        if inm is not None:
            tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
            if "*" in tags or tag in tags:
                req.status = 304
                send_head(req, 0)
                return finish(req)
        else:
            ims = h.get("if-modified-since")
            if ims is not None and ims.strip() == modified:
                req.status = 304
                send_head(req, 0)
                return finish(req)
        start, end = 0, size - 1
        rng = h.get("range")
        if rng is not None and size:
            if_range = h.get("if-range")
            if if_range is None or if_range.strip() in (tag, modified):
                parsed = parse_range(rng, size)
                if parsed is False:
                    rh["Content-Range"] = f"bytes */{size}"
                    req.exit(416)
                if parsed is not None:
                    start, end = parsed
                    req.status = 206
                    rh["Content-Range"] = f"bytes {start}-{end}/{size}"
        elif rng is not None and not size:
            rh["Content-Range"] = "bytes */0"
            req.exit(416)
        length = end - start + 1 if size else 0
        loc = req.location
        filtered = loc is not None and loc.body_filter
        if length <= _SMALL or filtered:
            if length <= _SMALL:
                data = os.pread(fd, length, start) if length else b""
                if req.method == "HEAD" and not filtered and (loc is None or loc.compress is None):
                    send_head(req, length)
                    return finish(req)
                req.respond(data)
                return finish(req)
            offset, left = start, length
            while left > 0:
                piece = os.pread(fd, min(_PIECE, left), offset)
                if not piece:
                    break
                offset += len(piece)
                left -= len(piece)
                req.stream(piece, False)
            req.stream(b"", True)
            return None
        send_head(req, length)
        if req.method != "HEAD":
            _sendfile(req, fd, start, length)
        return finish(req)


def _sendfile(req: Any, fd: int, offset: int, count: int) -> None:
    """Zero-copy body (see ``Request.sendfile``)."""
    req.sendfile(fd, offset, count)


def make_content(loc: Any, app: Any) -> Callable[[Any], None]:
    """The content handler for ``loc.root`` (see ``StaticHandler``)."""
    return StaticHandler(loc.root, tuple(loc.index), loc.default_type)


def check(loc: Any, path: str, ctx: Context) -> None:
    """``index`` names at least one file, none empty."""
    if not loc.index or not all(loc.index):
        ctx.err(f"{path}.index", "index needs at least one non-empty file name")


#: The ``root`` feature for ``edgeworker.config``: files under ``root`` (a path relative to the
#: config folder), ``index`` the files tried for a directory.
FEATURE = Feature(
    content="edgeworker.static:make_content",
    fields=(("root", PathStr | None, None), ("index", StrList, StrList(("index.html",)))),
    check=check,
)
