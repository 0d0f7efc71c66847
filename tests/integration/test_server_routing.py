"""Server selection by Host and nginx location precedence, end to end."""

from __future__ import annotations

import pytest

from ..support import Server

CONF = '''
[main]

[[server]]
listen = ["127.0.0.1:{port}"]
server_name = ["default.test"]

  [[server.location]]
  match = "/"
  return = {{ status = 200, body = "default:prefix-root" }}

[[server]]
listen = ["127.0.0.1:{port}"]
server_name = ["example.com", "*.example.com"]

  [[server.location]]
  match = "= /"
  return = {{ status = 200, body = "example:exact-root" }}

  [[server.location]]
  match = "/"
  return = {{ status = 200, body = "example:prefix-root" }}

  [[server.location]]
  match = "/documents/"
  return = {{ status = 200, body = "example:documents" }}

  [[server.location]]
  match = "^~ /images/"
  return = {{ status = 200, body = "example:images" }}

  [[server.location]]
  match = "~* \\\\.(gif|jpg|jpeg)$"
  return = {{ status = 200, body = "example:regex-$1" }}
'''


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("routing"), CONF).start()
    yield s
    s.stop()


@pytest.mark.parametrize(
    "host, path, body",
    [
        ("example.com", "/", "example:exact-root"),
        ("example.com", "/index.html", "example:prefix-root"),
        ("example.com", "/documents/document.html", "example:documents"),
        ("example.com", "/images/1.gif", "example:images"),
        ("example.com", "/documents/1.JPG", "example:regex-JPG"),
        ("www.example.com", "/", "example:exact-root"),
        ("EXAMPLE.COM.", "/", "example:exact-root"),
        ("other.test", "/", "default:prefix-root"),
        ("default.test", "/images/1.gif", "default:prefix-root"),
    ],
)
def test_nginx_precedence(srv, host, path, body):
    status, _, data = srv.get(path, headers={"Host": host})
    assert status == 200
    assert data.decode() == body
