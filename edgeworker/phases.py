"""The request pipeline: rewrite → access → content → header_filter → body_filter* → log.

``App`` is built once per worker from the config: it resolves every handler named in the
config into a callable (``LocationRuntime``) and runs each request through the phases.
"""

from __future__ import annotations

import importlib
import logging
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from . import handlers as handler_mod
from .accesslog import AccessLog
from .config import FEATURES
from .errors import ClientGone, ConfigError, Jump, PhaseError, RequestExit
from .http.protocol import Limits
from .http.responses import error_page
from .request import (
    ACCESS,
    BODY_FILTER,
    CONTENT,
    HEADER_FILTER,
    LOG,
    REWRITE,
    Request,
)
from .routing import Router
from .tls.connection import refusal_response
from .uri import BadURI

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config
    from .http.channel import Channel

_json_encode = msgspec.json.Encoder().encode
MAX_JUMPS = 10  # nginx: "rewrite or internal redirection cycle" after 10


class LocationRuntime:
    """A location with its handlers resolved to callables."""

    __slots__ = (
        "path",
        "conf",
        "rewrite",
        "access",
        "content",
        "return_",
        "header_filters",
        "body_filter",
        "log",
        "default_type",
        "content_type_line",
        "add_header",
        "client_max_body_size",
        "compress",
        "output_filters",
    )

    def __init__(self, path: str, conf: Any, app: App) -> None:
        self.path = path
        self.conf = conf
        resolve = app._resolve

        def many(field: str) -> tuple[Callable, ...]:
            specs = getattr(conf, field) or ()
            return tuple(resolve(spec, f"{path}.{field}") for spec in specs)

        self.rewrite = many("rewrite")
        # declarative access features run first, in registry order (limit, then jwt)
        features = tuple(
            _feature(factory, key, path)(conf, app)
            for key, factory in ACCESS_FEATURES
            if getattr(conf, key, None) is not None
        )
        self.access = features + many("access")
        self.header_filters = many("header_filter")
        self.body_filter = many("body_filter")
        self.log = many("log")
        self.content = resolve(conf.content, f"{path}.content") if conf.content else None
        for key, factory in CONTENT_SOURCES:
            if getattr(conf, key, None):
                self.content = _feature(factory, key, path)(conf, app)
        self.return_ = getattr(conf, "return_", None)
        self.default_type = conf.default_type
        self.content_type_line = b"\r\nContent-Type: " + conf.default_type.encode("latin-1")
        self.add_header = tuple(
            (name.encode("latin-1"), value) for name, value in (conf.add_header or {}).items()
        )
        self.client_max_body_size = conf.client_max_body_size
        #: the output filter below the handlers' (compression), or None
        self.compress = None
        for key, factory in OUTPUT_FEATURES:
            built = _feature(factory, key, path)(conf, app)
            if built is not None:
                self.compress = built
        #: any output filter (the output methods test this one flag first)
        self.output_filters = bool(self.header_filters or self.body_filter or self.compress)


# The declarative features of ``config.FEATURES``: (location key, "module:function" of the
# build function). Each build function gets (location conf, app) and returns the handler to run:
# ``fn(req)`` in the access phase, or as the content handler.
ACCESS_FEATURES = tuple((f.key, f.access) for f in FEATURES if f.access)
CONTENT_SOURCES = tuple((f.key, f.content) for f in FEATURES if f.content)
OUTPUT_FEATURES = tuple((f.key, f.output) for f in FEATURES if f.output)


def _feature(factory: str, key: str, path: str) -> Callable:
    module, _, name = factory.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise _ResolveError(
                f"{path}.{key}: not supported by this edgeworker version yet"
            ) from None
        raise
    return getattr(mod, name)


class App:
    """Everything a worker needs to answer requests, built from one config generation."""

    #: Called with every finished request (set by edgeworker.status.metrics in a worker).
    record: Callable[[Request], None] | None = None

    def __init__(self, cfg: Config, log: logging.Logger | None = None) -> None:
        self.cfg = cfg
        self.log = log or logging.getLogger("edgeworker")
        self.http = cfg.http
        self.limits = Limits(
            max_request_line=cfg.http.max_request_line,
            max_header_size=cfg.http.max_header_size,
            max_headers=cfg.http.max_headers,
        )
        #: keep request fields named with "_" (else the protocol drops them, as nginx does)
        self.underscores = cfg.http.underscores_in_headers or not cfg.http.ignore_invalid_headers
        rid = cfg.http.request_id_header
        #: the request-id field: lower-case name (what the protocol looks for) and the start
        #: of its response line; both None when ``request_id_header = ""``
        self.rid_field: bytes | None = rid.lower().encode("latin-1") if rid else None
        self.rid_prefix: bytes | None = b"\r\n" + rid.encode("latin-1") + b": " if rid else None
        self.code_cache = cfg.main.code_cache
        self.router = Router.from_config(cfg)
        self.runtimes: dict[int, LocationRuntime] = {}
        errors: list[str] = []
        for si, server in enumerate(cfg.server):
            for li, loc in enumerate(server.location):
                path = f"server[{si}].location[{li}]"
                try:
                    self.runtimes[id(loc)] = LocationRuntime(path, loc, self)
                except _ResolveError as exc:
                    errors.append(str(exc))
        #: server index -> its ``ssl_certificate_by`` function (TLS servers that name one)
        self.certificate_by: dict[int, Callable] = {}
        for si, server in enumerate(cfg.server):
            spec = getattr(server, "ssl_certificate_by", None)
            if spec and server.listen_ssl:
                try:
                    self.certificate_by[si] = self._resolve(
                        spec, f"{server.path}.ssl_certificate_by"
                    )
                except _ResolveError as exc:
                    errors.append(str(exc))
        if errors:
            raise ConfigError(cfg.file, errors)
        self.access_log = AccessLog.from_config(cfg.http)

    def _resolve(self, spec: str, where: str) -> Callable:
        try:
            fn = handler_mod.resolve(spec)
        except Exception as exc:  # import errors of user code, with the config path
            raise _ResolveError(f"{where}: {exc}") from exc
        if self.code_cache:
            return fn
        return _Fresh(spec)

    # -------------------------------------------------------------- the pipeline
    def handle(self, conn: Channel, head: Any) -> Request | None:
        """Process one request on ``conn``; returns the request (for keep-alive decisions)."""
        try:
            req = Request(conn, head, self)
        except BadURI:
            conn.send_error(400)
            return None
        route = conn.route  # (the connection's one server, when nothing below can change it)
        if route is None:
            route = self._server_route(conn, req, head)
            if route is None:
                return req  # answered already (a TLS refusal)
        req.server_route = route
        found = route.found.get(req.uri)  # (a URI seen before: find_location's answer)
        if found is None:
            found = route.find_location(req.uri)
        if found is None:
            req.status = 404
            req.exit_body = None
            self._respond_exit(req)
            self._log_phase(req)
            return req
        loc, req.captures = found
        rt = self.runtimes[id(loc)]
        req.location = rt
        try:
            if rt.rewrite:
                rt = self._rewrite(req, rt, route)
            req.phase = ACCESS
            for fn in rt.access:
                fn(req)
            req.phase = CONTENT
            content = rt.content  # (not called as rt.content(req): see _log_phase)
            if content is not None:
                result = content(req)
                if not req.ended:  # (else the handler answered already: a proxied request)
                    cls = result.__class__
                    if (cls is str or cls is bytes) and req.output is None and not req.headers_sent:
                        # the usual answer, one whole body: what _finish_content does then,
                        # without its frame; req.respond when there are filters to run
                        body = result.encode() if cls is str else result
                        loc = req.location
                        if loc is None or not loc.output_filters:
                            conn.send_response(req, body)
                        else:
                            req.respond(body)
                    else:
                        self._finish_content(req, result)
            elif rt.return_ is not None:
                self._do_return(req, rt.return_)
            else:  # validated config: unreachable
                raise RuntimeError(f"{rt.path}: no content source")
        except RequestExit:
            self._respond_exit(req)
        except ClientGone:
            req.keep_alive = False
            raise
        except Exception:
            self._handler_failed(req)
        self._log_phase(req)
        return req

    def _server_route(self, conn: Channel, req: Request, head: Any) -> Any:
        """The server of ``req`` (its address, then ``Host``); None when a TLS refusal was
        answered instead. Kept as ``conn.route`` when every request of the connection gets
        the same one: its address has one server, the TLS side agrees with it and handler
        code is cached (else each request purges the user's modules here)."""
        names = conn.names
        if names is None:  # the servers of the connection's address, looked up once
            names = conn.names = self.router.table_for((conn.server_addr, conn.server_port))
        route = names.only
        same = route is not None and self.code_cache
        if route is None:
            route = names.lookup(req.host if head.host else None)
        if not self.code_cache:
            handler_mod.purge_user_modules(self.cfg.main.python_path)
        tls = conn.tls
        if tls is not None and (route is not tls.route or tls.refusal is not None):
            same = False
            if not head.host:  # no Host (HTTP/1.0): the server SNI selected, as nginx
                route = tls.route
            req.server_route = route
            if self._tls_refused(req, tls, route):
                return None
        if same:
            conn.route = route
        return route

    def _tls_refused(self, req: Request, tls: Any, route: Any) -> bool:
        """Answer (and log) a request on a TLS connection that must not be served: 421 when
        ``Host`` selected a server that accepts other client certificates than the one SNI
        selected (a client-certificate check cannot be bypassed through ``Host``), 400 when
        a required client certificate was not sent. False: serve it."""
        if tls.refusal is not None:
            req.status = 400
            req.exit_body = refusal_response(tls.refusal)
        elif tls.misdirected(route):
            req.status = 421
            req.exit_body = None
        else:
            return False
        req.content_type = "text/html"
        req.keep_alive = False
        self._respond_exit(req)
        self._log_phase(req)
        return True

    def _rewrite(self, req: Request, rt: LocationRuntime, route: Any) -> LocationRuntime:
        """The rewrite phase of ``rt`` and of the locations its jumps lead to; the location
        whose rewrite handlers ran to their end (then the access and content phases run)."""
        jumps = 0
        while True:
            try:
                req.phase = REWRITE
                for fn in rt.rewrite:
                    fn(req)
                break
            except Jump:
                jumps += 1
                if jumps > MAX_JUMPS:
                    self.log.error(
                        'rewrite or internal redirection cycle while processing "%s"', req.uri
                    )
                    req.status = 500
                    req.exit_body = None
                    raise RequestExit() from None
                found = route.find_location(req.uri)
                if found is None:
                    req.location = None
                    req.status = 404
                    raise RequestExit() from None
                loc, req.captures = found
                rt = self.runtimes[id(loc)]
                req.location = rt
        return rt

    def _finish_content(self, req: Request, result: Any) -> None:
        if req.ended:
            return
        if result is None:
            body = req.take_output()
        elif isinstance(result, bytes):
            body = req.take_output() + result if req.output else result
        elif isinstance(result, str):
            body = req.take_output() + result.encode() if req.output else result.encode()
        elif isinstance(result, (dict, list)):
            if req.content_type is None and "content-type" not in req.resp_headers:
                req.content_type = "application/json"
            body = req.take_output() + _json_encode(result)
        elif isinstance(result, (bytearray, memoryview)):
            body = req.take_output() + bytes(result)
        elif isinstance(result, Iterable):
            self._stream_iterable(req, result)
            return
        else:
            raise TypeError(
                f"content handler returned {type(result).__name__}; expected str, bytes, "
                "dict, list, an iterable of bytes, or None"
            )
        if req.headers_sent:
            req.stream(body, True)
        else:
            req.respond(body)

    def _stream_iterable(self, req: Request, it: Iterable) -> None:
        pending = req.take_output()
        if pending:
            req.stream(pending, False)
        for piece in it:
            if isinstance(piece, str):
                piece = piece.encode()
            elif not isinstance(piece, bytes):
                piece = bytes(piece)
            if piece:
                req.stream(piece, False)
        req.stream(b"", True)

    def _do_return(self, req: Request, ret: Any) -> None:
        req.status = ret.status
        if ret.location:
            req.resp_headers["Location"] = req.var.expand(ret.location)
        req.exit_body = req.var.expand(ret.body).encode() if ret.body is not None else None
        raise RequestExit()

    # ------------------------------------------------------------ exits & errors
    def _respond_exit(self, req: Request) -> None:
        """Answer the response that ``req.exit()``/``redirect``/``return`` prepared."""
        if req.headers_sent:
            if not req.ended:
                req.stream(req.take_output(), True)
            return
        body = req.exit_body
        if body is None:
            body = b"" if req.status < 300 else error_page(req.status)
            if req.status >= 300 and req.content_type is None:
                req.content_type = "text/html"
            if req.status < 300 and req.output:
                body = req.take_output()
        req.phase = HEADER_FILTER
        req.respond(body)

    def _handler_failed(self, req: Request) -> None:
        self.log.error(
            "%s handler failed while processing %s %s:\n%s",
            req.phase,
            req.method,
            req.request_uri,
            traceback.format_exc().rstrip(),
        )
        if req.headers_sent:
            req.keep_alive = False  # the response is cut: the client must see the close
            return
        req.status = 500
        req.exit_body = None
        req.output = None
        req.content_type = "text/html"
        req.reset_resp_headers()  # only X-Request-Id survives
        try:
            req.respond(error_page(500))
        except ClientGone:
            raise
        except Exception:  # a failing header/body filter on the error page itself
            req.location = None
            req.content_type = "text/html"
            req.respond(error_page(500))

    # ------------------------------------------------------------ filters & log
    def header_filter(self, req: Request) -> bytes | None:
        """Run the header_filter handlers once. If one calls ``req.exit()``, the response it
        prepared replaces the one on its way: the new body is returned (else None)."""
        rt = req.location
        if rt is None or not rt.header_filters:
            return None
        saved = req.phase
        req.phase = HEADER_FILTER
        try:
            for fn in rt.header_filters:
                fn(req)
        except RequestExit:
            if req.exit_body is not None:
                return req.exit_body
            if req.status >= 300:
                req.content_type = "text/html"
                return error_page(req.status)
            return b""
        finally:
            req.phase = saved
        return None

    def body_filter(self, req: Request, data: bytes, eof: bool) -> bytes:
        saved = req.phase
        req.phase = BODY_FILTER
        try:
            for fn in req.location.body_filter:
                out = fn(req, data, eof)
                if out is None:
                    continue
                if isinstance(out, str):
                    out = out.encode()
                elif not isinstance(out, bytes):
                    out = bytes(out)
                data = out
        finally:
            req.phase = saved
        return data

    def _log_phase(self, req: Request) -> None:
        rt = req.location
        if rt is not None and rt.log:
            req.phase = LOG
            for fn in rt.log:
                try:
                    fn(req)
                except Exception:
                    self.log.error("log handler failed:\n%s", traceback.format_exc().rstrip())
        if self.access_log is not None:
            self.access_log.write(req)
        # a function held in an attribute is looked up first, then called: ``self.record(req)``
        # would take the generic (unspecialized) method lookup, hundreds of instructions
        record = self.record
        if record is not None:
            record(req)  # the status counters (edgeworker.status.metrics)
        # the request is done (every path ends here): drop its Vars, which points back at it,
        # so the request is freed by reference counting, not left to the cyclic GC; a later
        # req.var (a timer's callback) gets a new Vars over the same variables
        req._var = None


class _ResolveError(Exception):
    pass


class _Fresh:
    """``code_cache = false``: re-import the handler's module for every call."""

    __slots__ = ("spec",)

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def __call__(self, *args: Any) -> Any:
        # App.handle purged the user's modules once for this request; the first handler of
        # a module imports it afresh, the next ones of the same request reuse that import
        return handler_mod.resolve(self.spec)(*args)


__all__ = ["App", "LocationRuntime", "PhaseError"]
