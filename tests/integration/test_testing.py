"""edgeworker.testing: Server on a user's config (free ports, hosts and flags kept, relative
paths still resolving, reload, errors) and the pytest plugin run through pytester."""

from __future__ import annotations

import http.client
import os
import shutil
import ssl
import textwrap
import urllib.request
from pathlib import Path

import pytest

from edgeworker.testing import ReloadError, Server, ServerError

from ..support import ROOT, self_signed_cert

EXAMPLES = ROOT / "config" / "examples"

APP = """
def hello(req):
    return "hello v1\\n"
"""

CONF = """
[main]
python_path = ["."]
log_level = "warn"

[[server]]
listen = ["127.0.0.1:8080"]

  [[server.location]]
  match = "/hello"
  content = "app:hello"

[[server]]
listen = ["localhost:8080"]
server_name = "other.test"

  [[server.location]]
  match = "/"
  return = { status = 200, body = "other\\n" }
"""


def project(folder: Path, conf: str = CONF, app: str = APP) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "app.py").write_text(textwrap.dedent(app))
    (folder / "edgeworker.toml").write_text(conf)
    return folder / "edgeworker.toml"


def get(url: str, host: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_ports_replaced_hosts_and_flags_kept_relative_paths_resolve(tmp_path):
    """The HTTPS example as shipped: relative certificate paths, an ssl listener and a plain one."""
    shutil.copy(EXAMPLES / "https_hsts.toml", tmp_path / "edge.toml")
    shutil.copytree(EXAMPLES / "handlers", tmp_path / "handlers")
    (tmp_path / "certs").mkdir()
    self_signed_cert(tmp_path / "certs", "example.com")
    srv = Server(tmp_path / "edge.toml", workers=1)
    with srv:
        https, plain = srv.listeners
        assert https.host == plain.host == "127.0.0.1"
        assert https.ssl and not plain.ssl
        assert {https.port, plain.port}.isdisjoint({8080, 8443}) and https.port != plain.port
        assert srv.urls == [f"https://127.0.0.1:{https.port}", f"http://127.0.0.1:{plain.port}"]
        assert srv.url == srv.urls[0] and srv.port == https.port
        copies = list(tmp_path.glob(".edge.edgeworker-test-*.toml"))
        assert copies == [srv.running_config]
        assert f'"127.0.0.1:{https.port} ssl"' in copies[0].read_text()

        context = ssl.create_default_context(cafile=tmp_path / "certs" / "example.com.crt")
        conn = http.client.HTTPSConnection("127.0.0.1", https.port, context=context, timeout=10)
        conn.request("GET", "/", headers={"Host": "example.com"})
        r = conn.getresponse()
        assert (r.status, r.read()) == (200, b"hello over HTTPS\n")
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", plain.port, timeout=10)
        conn.request("GET", "/x", headers={"Host": "example.com"})
        r = conn.getresponse()
        assert r.status == 301 and r.getheader("Location") == "https://example.com/x"
        conn.close()
        workdir = srv.dir
    assert srv.proc.returncode is not None
    assert not list(tmp_path.glob(".edge.edgeworker-test-*"))  # the copy is gone
    assert not workdir.exists()  # and the temporary folder
    assert "edgeworker started" in srv.error_log()  # still readable after stop()


def test_servers_sharing_an_address_share_the_new_port(tmp_path):
    with Server(project(tmp_path)) as srv:
        assert len(srv.urls) == 1  # 127.0.0.1 and localhost are one address
        assert get(srv.url + "/hello") == (200, b"hello v1\n")
        assert get(srv.url + "/", host="other.test") == (200, b"other\n")


def test_reload_waits_for_the_new_generation_and_reports_a_refusal(tmp_path):
    config = project(tmp_path)
    with Server(config, workers=2) as srv:
        port = srv.port
        (tmp_path / "app.py").write_text(APP.replace("v1", "v2"))
        srv.reload()
        # the new generation serves as soon as reload() returns, on the same port
        assert [get(srv.url + "/hello") for _ in range(4)] == [(200, b"hello v2\n")] * 4
        assert srv.port == port

        config.write_text(CONF.replace('content = "app:hello"', 'content = "app:missing"'))
        with pytest.raises(ReloadError) as refused:
            srv.reload()
        assert "app:missing" in str(refused.value)
        assert get(srv.url + "/hello") == (200, b"hello v2\n")


def test_bad_configs_are_clear_errors(tmp_path):
    config = project(tmp_path, CONF.replace("[main]", "[main\n"))
    with pytest.raises(ServerError, match=rf"{config}: .*line 2"):
        Server(config).start()

    config = project(tmp_path, CONF.replace("[main]", "[main]\nbogus_key = 1"))
    srv = Server(config)
    with pytest.raises(ServerError) as failed:
        srv.start()
    message = str(failed.value)
    assert "edgeworker did not start" in message and "bogus_key" in message
    assert str(config) in message and ".edgeworker-test-" not in message
    assert srv.proc.poll() is not None
    assert not list(tmp_path.glob(".edgeworker.edgeworker-test-*"))

    with pytest.raises(ServerError, match="listen"):
        Server(project(tmp_path, CONF.replace("127.0.0.1:8080", "127.0.0.1"))).start()
    with pytest.raises(ValueError, match="workers must be an integer of at least 1"):
        Server(config, workers=0)
    with pytest.raises(ServerError, match="cannot read the config"):
        Server(tmp_path / "missing.toml").start()


# -- the pytest plugin, in a project of its own ---------------------------------------------------

PLUGIN_TESTS = """
import urllib.request
from pathlib import Path

HERE = Path(__file__).parent

def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()

def test_hello(edgeworker_server):
    srv = edgeworker_server(HERE / "edgeworker.toml", workers=2, env={"GREETING": "hi"})
    assert srv.port != 8080
    assert get(srv.url + "/hello") == b"hi from the handler"
    (HERE / "pids.txt").open("a").write(f"{srv.master_pid}\\n")

def test_reload(edgeworker_server):
    srv = edgeworker_server("edgeworker.toml")
    (HERE / "pids.txt").open("a").write(f"{srv.master_pid}\\n")
    app = HERE / "app.py"
    app.write_text(app.read_text().replace("from the handler", "after reload"))
    srv.reload()
    assert get(srv.url + "/hello") == b"hello after reload"

def test_boom_fails(edgeworker_server):
    srv = edgeworker_server("edgeworker.toml")
    (HERE / "pids.txt").open("a").write(f"{srv.master_pid}\\n")
    get(srv.url + "/boom")
"""

PLUGIN_APP = """
import os

def hello(req):
    return os.environ.get("GREETING", "hello") + " from the handler"

def boom(req):
    return 1 / 0
"""

PLUGIN_CONF = """
[main]
python_path = ["."]

[[server]]
listen = ["127.0.0.1:8080"]

  [[server.location]]
  match = "/hello"
  content = "app:hello"

  [[server.location]]
  match = "/boom"
  content = "app:boom"
"""


def test_pytest_plugin_fixture(pytester):
    pytester.makepyfile(test_app=PLUGIN_TESTS, app=PLUGIN_APP)
    (pytester.path / "edgeworker.toml").write_text(PLUGIN_CONF)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", timeout=120)
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    # the failing test's report carries the server's error log, with the handler's traceback
    assert "edgeworker error log (http://127.0.0.1:" in out
    assert "ZeroDivisionError" in out
    pids = [int(p) for p in (pytester.path / "pids.txt").read_text().split()]
    assert len(pids) == 3
    for pid in pids:  # every server was stopped at teardown
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not list(pytester.path.glob(".*edgeworker-test-*"))
