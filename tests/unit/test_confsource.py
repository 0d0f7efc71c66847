"""The config file as text: key lines, ``${NAME}`` expansion, suggestions, and the loader's
``FILE:LINE: path: cause`` messages built from them."""

from __future__ import annotations

import textwrap
import tomllib

import pytest

from edgeworker.config import loads
from edgeworker.confsource import SourceFile, expand, format_path, key_lines, suggest
from edgeworker.errors import ConfigError

CFG = "/etc/edgeworker/ew.toml"


def value_paths(value, path=()):
    """Every key path and array item of what tomllib decoded."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*path, k))
            out += value_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((*path, i))
            out += value_paths(v, (*path, i))
    return out


def lines_of(text: str) -> dict[str, int]:
    """key_lines, checked to name every path tomllib decodes (and only those)."""
    found = key_lines(text)
    expected = {format_path(p) for p in value_paths(tomllib.loads(text))}
    assert set(found) == expected
    return found


# --- the line of each key --------------------------------------------------------------------


def test_tables_arrays_of_tables_and_their_nesting():
    text = textwrap.dedent("""\
        # a comment
        top = 1
        [main]
        workers = 2

        [a.b.c]
        x = 1
        [a]
        y = 2
        [[server]]
        listen = "1"
          [[server.location]]
          match = "/"
          [[server.location]]
          match = "/b"
          [server.location.return]
          status = 204
        [[server]]
          [[server.location]]
          match = "/c"
        [server.extra]
        z = 3
    """)
    lines = lines_of(text)
    assert lines["top"] == 2
    assert lines["main"] == 3 and lines["main.workers"] == 4
    # an implicit table is where it is first named
    assert lines["a"] == 6 and lines["a.b"] == 6 and lines["a.b.c"] == 6
    assert lines["a.b.c.x"] == 7 and lines["a.y"] == 9
    assert lines["server"] == 10 and lines["server[0]"] == 10 and lines["server[1]"] == 18
    assert lines["server[0].listen"] == 11
    # each server counts its own locations
    assert lines["server[0].location[0]"] == 12 and lines["server[0].location[1]"] == 14
    assert lines["server[0].location[1].match"] == 15
    assert lines["server[0].location[1].return"] == 16
    assert lines["server[0].location[1].return.status"] == 17
    assert lines["server[1].location[0]"] == 19 and lines["server[1].location[0].match"] == 20
    # a table header after an array of tables is inside its last element
    assert lines["server[1].extra"] == 21 and lines["server[1].extra.z"] == 22


def test_dotted_and_quoted_keys():
    text = textwrap.dedent("""\
        a.b.c = 1
        "quoted key" = 2
        'literal.key' = 3
        "esc\\u0041\\"x" = 4
        site."google.com".x = 5
        [ t . "u.v" . 'w' ]
        1234 = 6
        bare-key_1 = 7
        ["x"]
        "" = 8
    """)
    lines = lines_of(text)
    assert lines["a"] == 1 and lines["a.b"] == 1 and lines["a.b.c"] == 1
    assert lines["quoted key"] == 2
    assert lines["literal.key"] == 3  # one key holding a dot
    assert lines['escA"x'] == 4
    assert lines["site.google.com.x"] == 5
    assert lines["t.u.v.w"] == 6 and lines["t.u.v.w.1234"] == 7
    assert lines["t.u.v.w.bare-key_1"] == 8
    assert lines["x"] == 9


def test_arrays_and_inline_tables():
    text = textwrap.dedent("""\
        [upstream.api]
        servers = [
          "127.0.0.1:1",   # a comment, with [brackets] and "quotes"
          { address = "127.0.0.1:2", weight = 2 },

          { address = "127.0.0.1:3", inner = { deep = [1, [2, 3]] } },
        ]
        flat = [1, 2, 3]
        nested = [[1, 2], [
          3,
        ]]
        empty = []
        point = { x = 1, y = { z = "}" } }
        after = true
    """)
    lines = lines_of(text)
    assert lines["upstream.api.servers"] == 2
    assert lines["upstream.api.servers[0]"] == 3
    assert lines["upstream.api.servers[1]"] == 4
    assert lines["upstream.api.servers[1].weight"] == 4
    assert lines["upstream.api.servers[2].inner.deep[1][0]"] == 6
    assert lines["upstream.api.flat[2]"] == 8
    assert lines["upstream.api.nested[1]"] == 9 and lines["upstream.api.nested[1][0]"] == 10
    assert lines["upstream.api.empty"] == 12
    assert lines["upstream.api.point.y.z"] == 13
    assert lines["upstream.api.after"] == 14


def test_strings_of_every_kind_keep_the_count_of_lines():
    text = (
        'basic = "with # and ] and , and \\" and \\\\"\n'
        "literal = 'C:\\path # not a comment'\n"
        'multi = """\n'
        "line [not.a.table]\n"
        'key = "not a key"\n'
        '\\"""still inside\n'
        'ends with quotes""""\n'
        "lit_multi = '''\n"
        "[[no]]\n"
        "'''\n"
        'continued = """one \\\n'
        '    two"""\n'
        "date = 1979-05-27 07:32:00Z # a date with a space\n"
        "local = 07:32:00\n"
        "float = -1.5e3\n"
        "hex = 0xDEAD_BEEF\n"
        "inf = inf\n"
        "[last]\n"
        "key = 1\n"
    )
    lines = lines_of(text)
    assert lines["basic"] == 1 and lines["literal"] == 2 and lines["multi"] == 3
    assert lines["lit_multi"] == 8 and lines["continued"] == 11
    assert lines["date"] == 13 and lines["local"] == 14 and lines["inf"] == 17
    assert lines["last"] == 18 and lines["last.key"] == 19


def test_crlf_line_ends_and_indentation():
    text = "[main]\r\n  workers = 2\r\n\r\n\t[[server]]\r\n\tlisten = ['1', '2']\r\n"
    lines = lines_of(text)
    assert lines["main.workers"] == 2 and lines["server[0]"] == 4
    assert lines["server[0].listen[1]"] == 5


def test_an_empty_document_has_no_keys():
    assert lines_of("") == {} and lines_of("# only a comment\n\n") == {}


def test_the_place_of_a_message():
    lines = {
        "http": 1,
        "http.ssl_protocols": 2,
        "server": 3,
        "server[0]": 3,
        "server[0].gzip_types": 4,
        "server[0].location": 5,
        "server[0].location[0]": 5,
        "server[0].location[0].acces": 7,
    }
    f = SourceFile(CFG, lines)
    assert f == CFG and isinstance(f, str)
    # an unknown key: where that key is written
    assert f.where('server[0].location[0]: unknown key "acces"') == f"{CFG}:7"
    # a key inherited from the server or from [http]: where it is set
    assert f.where("server[0].location[0].gzip_types[1]: invalid MIME type") == f"{CFG}:4"
    assert f.where('server[0].ssl_protocols: unknown protocol "x"') == f"{CFG}:2"
    # else the nearest enclosing table
    assert f.where("server[0].location[0].jwt.secret: unreadable") == f"{CFG}:5"
    assert f.where("server[0].listen[0]: invalid listen") == f"{CFG}:3"
    # not in the file at all
    assert f.where("main.workers: x") == CFG
    assert f.where("cannot read: no such file") == CFG
    assert SourceFile(CFG).where("server[0]: x") == CFG


# --- ${NAME} expansion -----------------------------------------------------------------------

ENV = {"PORT": "8081", "HOST": "10.0.0.1", "EMPTY": "", "DOLLAR": "$HOME", "_X1": "x"}


def expanded(value):
    problems = []
    out = expand(value, ENV, lambda path, msg: problems.append(f"{path}: {msg}"))
    assert problems == []
    return out


@pytest.mark.parametrize(
    "text, result",
    [
        ("${PORT}", "8081"),
        ("${HOST}:${PORT}", "10.0.0.1:8081"),
        ("a${_X1}b", "axb"),
        ("${MISSING:-8080}", "8080"),
        ("${MISSING:-}", ""),
        ("${EMPTY:-default}", "default"),  # as the shell: unset or empty
        ("${EMPTY}", ""),
        ("${MISSING:-$host}", "$host"),  # a default is taken as written
        ("${DOLLAR}", "$HOME"),  # a value is not expanded again
        ("$$", "$"),
        ("$${PORT}", "${PORT}"),
        ("$$${PORT}", "$8081"),
        ("$$$${PORT}", "$${PORT}"),
        # nginx variables stay as written
        ("$host$request_uri", "$host$request_uri"),
        ("${arg_id}px", "${arg_id}px"),
        ("${Mixed}", "${Mixed}"),
        ("${1}", "${1}"),
        ("${}", "${}"),
        ("~ ^/a$", "~ ^/a$"),
        ("cost: 5$", "cost: 5$"),
        ("no dollar", "no dollar"),
    ],
)
def test_expansion(text, result):
    assert expanded(text) == result


def test_expansion_reaches_every_string_value_but_no_key():
    raw = {
        "${PORT}": "${PORT}",
        "list": ["${HOST}", 1, ["${PORT}"], {"k": "${PORT}"}],
        "n": 5,
        "b": True,
    }
    assert expanded(raw) == {
        "${PORT}": "8081",
        "list": ["10.0.0.1", 1, ["8081"], {"k": "8081"}],
        "n": 5,
        "b": True,
    }


def test_expansion_problems_name_the_value_and_the_variable():
    problems = []
    raw = {"server": [{"listen": ["${NOPE}", "${PORT"], "x": "${A-b} ${ok}"}]}
    out = expand(raw, ENV, lambda path, msg: problems.append(f"{path}: {msg}"))
    assert problems == [
        'server[0].listen[0]: environment variable "NOPE" is not set '
        "(give a default with ${NOPE:-value})",
        'server[0].listen[1]: malformed "${PORT": expected ${NAME} or ${NAME:-default} '
        '(write "$$" for a literal "$")',
        'server[0].x: malformed "${A-b}": expected ${NAME} or ${NAME:-default} '
        '(write "$$" for a literal "$")',
    ]
    assert out["server"][0]["listen"] == ["${NOPE}", "${PORT"]


# --- suggestions -----------------------------------------------------------------------------


def test_suggest():
    assert suggest("conten", ["content", "access"]) == ' (did you mean "content"?)'
    assert suggest("round_robn", ["round_robin", "least_conn"]) == (
        ' (did you mean "round_robin"?)'
    )
    assert suggest("zzz", ["content", "access"]) == ""
    assert suggest("x", []) == ""


# --- the loader's messages -------------------------------------------------------------------


def load_error(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as e:
        loads(textwrap.dedent(text), CFG, env or {})
    return str(e.value).splitlines()


def test_every_kind_of_error_has_its_line():
    lines = load_error("""\
        [main]
        log_level = "inof"
        workers = 0
        [http]
        ssl_protocols = ["TLSv1.4"]
        gzip_types = ["nope"]
        [upstream.api]
        servers = ["127.0.0.1:1"]
        balance = "round_robn"
        [[server]]
        listen = ["127.0.0.1:8080", "127.0.0.1:80 sll"]
          [[server.location]]
          match = "/"
          conten = "app:x"
          [[server.location]]
          match = "/b"
          proxy_pass = "http://ap"
          [[server.location]]
          match = "/c"
        [[server]]
        server_name = "bad name"
        location = [{ match = "/", return = { status = 301 } }]
    """)
    assert lines == [
        f'{CFG}:3: main.workers: invalid workers 0: expected an integer >= 1 or "auto"',
        f'{CFG}:6: http.gzip_types[0]: invalid MIME type "nope": expected "type/subtype" or "*"',
        f'{CFG}:9: upstream.api.balance: invalid balance "round_robn": expected one of '
        'round_robin, least_conn, ip_hash, hash, random (did you mean "round_robin"?)',
        f'{CFG}:11: server[0].listen[1]: unknown listen flag "sll" (did you mean "ssl"?)',
        f'{CFG}:14: server[0].location[0]: unknown key "conten" (did you mean "content"?)',
        f'{CFG}:17: server[0].location[1].proxy_pass: invalid proxy_pass "http://ap": no upstream '
        'named "ap" (did you mean "api"?)',
        f"{CFG}:18: server[0].location[2]: exactly one of content, proxy_pass, return, root, "
        "status is required (found: none)",
        f'{CFG}:21: server[1].server_name[0]: invalid server name "bad name"',
        f"{CFG}:22: server[1].location[0].return: status 301 is a redirect and needs a location",
        # a key a server inherits from [http]: reported on each server, found where it is set
        f'{CFG}:5: server[0].ssl_protocols: unknown protocol "TLSv1.4" (did you mean "TLSv1.3"?)',
        f'{CFG}:5: server[1].ssl_protocols: unknown protocol "TLSv1.4" (did you mean "TLSv1.3"?)',
    ]


def test_an_unknown_top_level_key_gets_a_suggestion():
    assert load_error("[sever]\nx = 1\n[[server]]\n") == [
        f'{CFG}:1: sever: unknown key "sever" (did you mean "server"?)'
    ]


def test_environment_variables_in_values():
    text = textwrap.dedent("""\
        [http]
        keepalive_timeout = "${KEEPALIVE:-30s}"
        client_max_body_size = "${BODY}"
        access_log_format = '$$remote_addr ${arg_x}y $status ${TAG}'
        [shared_dict]
        cache = "${SIZE:-1m}"
        [redis."${NAME}"]
        url = "redis://${REDIS:-127.0.0.1}:6379/0"
        [[server]]
        listen = "${ADDR:-127.0.0.1}:${PORT}"
          [[server.location]]
          match = "/"
          return = { status = 200, body = "price: 5$ $$5" }
    """)
    env = {"BODY": "2m", "PORT": "9000", "TAG": "v1"}
    cfg = loads(text, CFG, env)
    assert cfg.http.keepalive_timeout == 30.0
    assert cfg.http.client_max_body_size == 2 * 1024 * 1024
    assert cfg.http.access_log_format == "$remote_addr ${arg_x}y $status v1"
    assert cfg.shared_dict == {"cache": 1024 * 1024}
    assert cfg.redis["${NAME}"].url == "redis://127.0.0.1:6379/0"  # keys are never expanded
    assert cfg.server[0].listen == ("127.0.0.1:9000",)
    assert cfg.server[0].location[0].return_.body == "price: 5$ $5"


def test_an_unset_variable_stops_the_load_with_its_key_and_line():
    lines = load_error(
        """\
        [main]
        workers = 0
        [[server]]
        listen = [
          "127.0.0.1:8080",
          "127.0.0.1:${PORT}",
        ]
          [[server.location]]
          match = "/"
          proxy_pass = "http://${BACKEND}"
        """,
        {"PORT_X": "1"},
    )
    # only the expansion errors: the values would add confusing ones (workers is checked once
    # the variables are set)
    assert lines == [
        f'{CFG}:6: server[0].listen[1]: environment variable "PORT" is not set '
        "(give a default with ${PORT:-value})",
        f'{CFG}:10: server[0].location[0].proxy_pass: environment variable "BACKEND" is not set '
        "(give a default with ${BACKEND:-value})",
    ]


def test_the_loader_reads_this_process_environment(monkeypatch):
    monkeypatch.setenv("EW_TEST_PORT", "9123")
    text = '[[server]]\nlisten = "127.0.0.1:${EW_TEST_PORT}"\n'
    assert loads(text, CFG).server[0].listen == ("127.0.0.1:9123",)
    monkeypatch.delenv("EW_TEST_PORT")
    with pytest.raises(ConfigError, match=r':2: server\[0\].listen: environment variable "EW_TES'):
        loads(text, CFG)


def test_an_expanded_number_or_boolean_takes_the_type_of_its_key():
    text = textwrap.dedent("""\
        [main]
        workers = "${WORKERS:-3}"
        worker_connections = "${CONNECTIONS}"
        code_cache = "${CODE_CACHE:-false}"
        [http]
        gzip_comp_level = "${LEVEL:-5}"
        [upstream.api]
        servers = [{ address = "127.0.0.1:1", weight = "${WEIGHT:-4}" }]
        [[server]]
          [[server.location]]
          match = "/"
          return = { status = "${STATUS:-204}", body = "${BODY:-12}" }
    """)
    cfg = loads(text, CFG, {"CONNECTIONS": "100"})
    assert (cfg.main.workers, cfg.main.worker_connections) == (3, 100)
    assert cfg.main.code_cache is False and cfg.http.gzip_comp_level == 5
    assert cfg.upstream["api"].servers[0].weight == 4
    ret = cfg.server[0].location[0].return_
    assert ret.status == 204 and ret.body == "12"  # a string key keeps the string
    # what does not spell a number stays a string, refused as before
    lines = load_error(text, {"CONNECTIONS": "100x", "STATUS": "2O4"})
    assert lines == [
        f"{CFG}:3: main.worker_connections: expected int, got str",
        f"{CFG}:12: server[0].location[0].return.status: expected int, got str",
    ]
    # a number written as a string without any ${...} is refused as before
    assert load_error('[main]\nworker_connections = "100"\n[[server]]\n') == [
        f"{CFG}:2: main.worker_connections: expected int, got str"
    ]
