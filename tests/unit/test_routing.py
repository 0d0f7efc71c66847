"""Server selection and location matching, with nginx's precedence rules."""

from __future__ import annotations

import re
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeworker.config import loads
from edgeworker.routing import Router, normalize_host


def router_of(text: str) -> Router:
    return Router.from_config(loads(textwrap.dedent(text), "/etc/ew/ew.toml"))


def locations(*matches: str, listen: str = "127.0.0.1:8080") -> str:
    """A one-server config whose locations answer with their own name: content = "app:<i>"."""
    out = [f'[[server]]\nlisten = ["{listen}"]']
    for i, match in enumerate(matches):
        out.append(f"  [[server.location]]\n  match = '{match}'\n  content = 'app:loc{i}'")
    return "\n".join(out)


def where(router: Router, uri: str) -> str | None:
    route = router.find_server(("127.0.0.1", 8080), "example.com")
    found = route.find_location(uri)
    return None if found is None else found[0].content


# --- location -------------------------------------------------------------------------------------

# The example of nginx's documentation for the `location` directive:
#   location = /                 { A }
#   location /                   { B }
#   location /documents/         { C }
#   location ^~ /images/         { D }
#   location ~* \.(gif|jpg|jpeg)$ { E }
NGINX_DOC = locations("= /", "/", "/documents/", "^~ /images/", r"~* \.(gif|jpg|jpeg)$")


@pytest.mark.parametrize(
    ("uri", "config"),
    [
        ("/", "A"),
        ("/index.html", "B"),
        ("/documents/document.html", "C"),
        ("/images/1.gif", "D"),
        ("/documents/1.jpg", "E"),
        ("/documents/1.JPG", "E"),
        ("/x.gif", "E"),
        ("/images/", "D"),
        ("/documents", "B"),
    ],
)
def test_nginx_documentation_example(uri, config):
    names = {"app:loc0": "A", "app:loc1": "B", "app:loc2": "C", "app:loc3": "D", "app:loc4": "E"}
    assert names[where(router_of(NGINX_DOC), uri)] == config


@pytest.mark.parametrize(
    ("matches", "uri", "expected"),
    [
        # exact only matches the whole URI
        (("= /a", "/"), "/a/b", "app:loc1"),
        (("= /a", "/"), "/a", "app:loc0"),
        # the longest prefix wins, whatever the file order
        (("/a/", "/a/b/", "/"), "/a/b/c", "app:loc1"),
        (("/", "/a/b/", "/a/"), "/a/x", "app:loc2"),
        # a regex beats a plain prefix ...
        (("/a/", r"~ \.php$"), "/a/x.php", "app:loc1"),
        # ... but not a ^~ prefix when it is the longest one
        (("^~ /a/", r"~ \.php$"), "/a/x.php", "app:loc0"),
        # ^~ matters only if it is the longest matching prefix
        (("^~ /a/", "/a/b/", r"~ \.php$"), "/a/b/x.php", "app:loc2"),
        # regexes are tried in file order, the first match wins
        ((r"~ \.php$", r"~ /x"), "/x.php", "app:loc0"),
        ((r"~ /x", r"~ \.php$"), "/x.php", "app:loc0"),
        # regex search is not anchored
        ((r"~ ab",), "/xxabyy", "app:loc0"),
        # ~ is case-sensitive, ~* is not
        ((r"~ \.PHP$", "/"), "/x.php", "app:loc1"),
        ((r"~* \.PHP$", "/"), "/x.php", "app:loc0"),
        # no regex matches: back to the longest prefix
        (("/a/", r"~ \.php$"), "/a/x.html", "app:loc0"),
        # nothing matches at all
        (("/a/", "= /b"), "/c", None),
        (("/a/",), "/a", None),
        (("= /",), "/x", None),
    ],
)
def test_location_precedence(matches, uri, expected):
    assert where(router_of(locations(*matches)), uri) == expected


def test_regex_captures_are_returned():
    router = router_of(locations(r"~ ^/users/(\d+)/(posts|likes)?", "/"))
    route = router.find_server(("127.0.0.1", 8080), None)
    loc, captures = route.find_location("/users/42/posts")
    assert loc.content == "app:loc0" and captures == ("42", "posts")
    loc, captures = route.find_location("/users/7/")
    assert captures == ("7", "")  # a group that did not take part is ""
    loc, captures = route.find_location("/other")
    assert loc.content == "app:loc1" and captures == ()


def test_named_and_case_insensitive_regex_captures():
    router = router_of(locations(r"~* ^/IMG/(?P<name>\w+)\.PNG$"))
    loc, captures = router.find_server(("127.0.0.1", 8080), None).find_location("/img/cat.png")
    assert captures == ("cat",)


def test_location_keeps_its_config_path():
    router = router_of(locations("/a", "/b", "= /c"))
    route = router.find_server(("127.0.0.1", 8080), None)
    assert route.path == "server[0]" and route.index == 0
    assert route.find_location("/b")[0].path == "server[0].location[1]"
    assert route.find_location("/c")[0].path == "server[0].location[2]"


# --- server ---------------------------------------------------------------------------------------

SERVERS = r"""
[[server]]
listen = ["127.0.0.1:8080"]
server_name = ["default.test"]
[[server]]
listen = ["127.0.0.1:8080"]
server_name = ["example.com", "www.example.com"]
[[server]]
listen = ["127.0.0.1:8080"]
server_name = ["*.example.com"]
[[server]]
listen = ["127.0.0.1:8080"]
server_name = ["*.api.example.com"]
[[server]]
listen = ["127.0.0.1:8080"]
server_name = ["mail.*"]
[[server]]
listen = ["127.0.0.1:8080"]
server_name = ["mail.example.*"]
[[server]]
listen = ["127.0.0.1:8080"]
server_name = ['~^(www\.)?shop\d+\.test$', '~^(.+)\.org$']
[[server]]
listen = ["127.0.0.1:8080"]
server_name = ['~^shop1\.test$']
[[server]]
listen = ["127.0.0.1:8080"]
server_name = [".example.net"]
"""


@pytest.mark.parametrize(
    ("host", "server"),
    [
        ("example.com", 1),
        ("www.example.com", 1),  # exact beats *.example.com
        ("foo.example.com", 2),
        ("a.b.example.com", 2),
        ("x.api.example.com", 3),  # the longest leading wildcard wins
        ("api.example.com", 2),
        ("mail.example.com", 2),  # leading wildcard beats trailing
        ("mail.example.org", 5),  # longest trailing wildcard
        ("mail.other.io", 4),
        ("shop1.test", 6),  # first matching regex, in file order
        ("www.shop22.test", 6),
        ("anything.org", 6),
        ("example.net", 8),  # ".example.net" also matches the bare name
        ("a.example.net", 8),
        ("unknown.test", 0),  # default server: the first one for the address
        (None, 0),
        ("", 0),
        # Host is compared case-insensitively, without port and trailing dot
        ("EXAMPLE.com", 1),
        ("example.com:8080", 1),
        ("example.com.", 1),
        ("Foo.Example.Com.:80", 2),
    ],
)
def test_server_name_precedence(host, server):
    router = router_of(SERVERS + '  [[server.location]]\n  match = "/"\n  content = "a:b"\n')
    assert router.find_server(("127.0.0.1", 8080), host).index == server


def test_servers_are_chosen_by_local_address_first():
    router = router_of("""
        [[server]]
        listen = ["127.0.0.1:8080"]
        server_name = ["a.test"]
        [[server]]
        listen = ["127.0.0.2:8080", "127.0.0.1:9090"]
        server_name = ["b.test"]
        [[server]]
        listen = ["8080"]
        server_name = ["c.test"]
        [[server]]
        listen = ["127.0.0.1:8080"]
        server_name = ["b.test"]
        [[server]]
        listen = ["[::1]:8080"]
        server_name = ["v6.test"]
    """)
    # on 127.0.0.1:8080 only servers 0 and 3 are candidates; 0 is the default
    assert router.find_server(("127.0.0.1", 8080), "b.test").index == 3
    assert router.find_server(("127.0.0.1", 8080), "c.test").index == 0
    assert router.find_server(("127.0.0.2", 8080), "a.test").index == 1
    assert router.find_server(("127.0.0.1", 9090), None).index == 1
    # any other local address on port 8080 falls to the wildcard listen
    assert router.find_server(("10.1.2.3", 8080), "a.test").index == 2
    assert router.find_server(("::ffff:127.0.0.1", 8080), "b.test").index == 3
    assert router.find_server(("::1", 8080, 0, 0), None).index == 4


def test_default_server_is_the_first_for_each_address():
    router = router_of("""
        [[server]]
        listen = ["127.0.0.1:8080"]
        server_name = ["one.test"]
        [[server]]
        listen = ["127.0.0.1:8081", "127.0.0.1:8080"]
        server_name = ["two.test"]
    """)
    assert router.find_server(("127.0.0.1", 8080), "x").index == 0
    assert router.find_server(("127.0.0.1", 8081), "x").index == 1


def test_listen_addresses_are_unique_and_covered_addresses_are_left_out():
    cfg = loads(textwrap.dedent("""
        [[server]]
        listen = ["127.0.0.1:8080", "127.0.0.1:8081"]
        [[server]]
        listen = ["127.0.0.1:8080", "8082", "127.0.0.1:8082", "[::1]:8082", "[::1]:8083"]
        server_name = ["x"]
        [[server]]
        listen = ["[::]:8083"]
    """), "/etc/ew/ew.toml")
    assert cfg.listen_addresses() == [
        ("127.0.0.1", 8080), ("127.0.0.1", 8081), ("0.0.0.0", 8082), ("::1", 8082),
        ("::", 8083)]


def test_host_cache_does_not_change_answers():
    router = router_of(SERVERS)
    for _ in range(3):
        for i in range(1500):  # more than the cache holds
            assert router.find_server(("127.0.0.1", 8080), f"h{i}.example.com").index == 2
    assert router.find_server(("127.0.0.1", 8080), "example.com").index == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ""),
        ("", ""),
        ("Example.COM", "example.com"),
        ("example.com:8080", "example.com"),
        ("example.com.", "example.com"),
        ("[::1]:8080", "[::1]"),
        ("[::1]", "[::1]"),
        ("127.0.0.1:80", "127.0.0.1"),
    ],
)
def test_normalize_host(raw, expected):
    assert normalize_host(raw) == expected


# --- property: the compiled lookup agrees with a literal reading of nginx's rules ---------------

_SEGMENTS = st.sampled_from(["a", "b", "ab", "x.php", "B"])
_PATHS = st.lists(_SEGMENTS, min_size=0, max_size=3).map(lambda parts: "/" + "/".join(parts))
_LOCS = st.one_of(
    st.tuples(st.sampled_from(["", "=", "^~"]), _PATHS),
    st.tuples(st.sampled_from(["~", "~*"]), st.sampled_from([r"\.php$", "^/a", "b/", "^/B", "x"])),
)


def naive(locs: list[tuple[str, str]], uri: str) -> int | None:
    for i, (mod, pat) in enumerate(locs):
        if mod == "=" and uri == pat:
            return i
    prefixes = [(len(pat), -i, i, mod) for i, (mod, pat) in enumerate(locs)
                if mod in ("", "^~") and uri.startswith(pat)]
    best = max(prefixes)[2:] if prefixes else None
    if best is not None and best[1] == "^~":
        return best[0]
    for i, (mod, pat) in enumerate(locs):
        if mod in ("~", "~*") and re.search(pat, uri, re.I if mod == "~*" else 0):
            return i
    return None if best is None else best[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(_LOCS, min_size=1, max_size=6, unique_by=lambda loc: (
    "prefix" if loc[0] in ("", "^~") else loc[0], loc[1])), _PATHS)
def test_find_location_agrees_with_the_rules_as_written(locs, uri):
    matches = [f"{mod} {pat}" if mod else pat for mod, pat in locs]
    router = router_of(locations(*matches))
    route = router.find_server(("127.0.0.1", 8080), None)
    expected = naive(locs, uri)
    for _ in range(2):  # the second answer comes from the route's table of recent answers
        found = route.find_location(uri)
        assert (None if found is None else int(found[0].content[len("app:loc"):])) == expected


def test_find_location_remembers_a_bounded_number_of_answers():
    from edgeworker import routing

    route = router_of(locations("/", "~ ^/(r)e(g)")).find_server(("127.0.0.1", 8080), None)
    first = route.find_location("/reg/x")
    assert first[1] == ("r", "g") and route.find_location("/reg/x") is first
    for i in range(routing.FOUND_MAX * 3):
        assert route.find_location(f"/p{i}")[0].match == "/"
        assert len(route.found) <= routing.FOUND_MAX
    long_uri = "/" + "x" * routing.FOUND_URI_MAX
    assert route.find_location(long_uri)[0].match == "/" and long_uri not in route.found
