"""systemd/edgeworker.service, its notify-reload drop-in and .socket: required settings,
`systemd-analyze verify`, and the unit's ExecReload= against a real master."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ..support import require_tool

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
DROPIN = UNITS / "edgeworker.service.d" / "notify-reload.conf"
BINARY = "/usr/local/bin/edgeworker"
CONFIG = "/etc/edgeworker/edgeworker.toml"
DEFAULT_GRACEFUL_TIMEOUT = 30.0  # [main] graceful_timeout's default

# what systemd < 253 says about the notify-reload drop-in (and nothing else is tolerated)
OLD_SYSTEMD_NOTES = (
    re.compile(r"Failed to parse service type, ignoring: notify-reload"),
    re.compile(r"Unknown key( name)? 'ReloadSignal' in section \[?Service\]?, ignoring"),
)


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """A systemd unit file as {section: {key: [values in order]}} (comments and continuations)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip() if pending else raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def seconds(span: str) -> float:
    """A systemd time span ("40s", "1min 30s", "500ms", "45") in seconds."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "": 1}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(number) * units[unit]
    return total


def one(section: dict[str, list[str]], key: str) -> str:
    values = section.get(key)
    assert values, f"{key}= is missing"
    assert len(values) == 1, f"{key}= is set {len(values)} times"
    return values[0]


@pytest.fixture(scope="module")
def service() -> dict[str, dict[str, list[str]]]:
    return parse_unit((UNITS / "edgeworker.service").read_text())


@pytest.fixture(scope="module")
def socket_unit() -> dict[str, dict[str, list[str]]]:
    return parse_unit((UNITS / "edgeworker.socket").read_text())


@pytest.fixture(scope="module")
def dropin() -> dict[str, dict[str, list[str]]]:
    return parse_unit(DROPIN.read_text())


# -- plain parse ------------------------------------------------------------------------------


def test_service_notify_protocol_and_reload(service):
    s = service["Service"]
    # Type=notify-reload and ReloadSignal= need systemd 253: the unit itself must load on 252
    assert one(s, "Type") == "notify"
    assert "ReloadSignal" not in s
    assert one(s, "NotifyAccess") == "main"
    # the CLI's reload checks first and signals the master only (found through the pid file)
    assert s["ExecReload"] == [f"{BINARY} reload -c {CONFIG}"]


def test_notify_reload_dropin(dropin):
    s = dropin["Service"]
    assert one(s, "Type") == "notify-reload"
    assert one(s, "ReloadSignal") == "SIGHUP"
    # an empty ExecReload= drops the unit's: next to the signal it would reload twice
    assert s["ExecReload"] == [""]
    assert set(dropin) == {"Service"} and set(s) == {"Type", "ReloadSignal", "ExecReload"}


def test_dropin_is_documented():
    readme = (UNITS / "README.md").read_text()
    assert "edgeworker.service.d/notify-reload.conf" in readme
    assert "notify-reload.conf" in (ROOT / "docs" / "deployment.md").read_text()


def test_service_commands(service):
    s = service["Service"]
    assert s["ExecStartPre"] == [f"{BINARY} check -c {CONFIG}"]
    assert one(s, "ExecStart") == f"{BINARY} run -c {CONFIG}"


def test_service_stop_semantics(service):
    s = service["Service"]
    assert one(s, "KillMode") == "mixed"
    assert one(s, "KillSignal") == "SIGTERM"
    assert seconds(one(s, "TimeoutStopSec")) > DEFAULT_GRACEFUL_TIMEOUT
    assert one(s, "Restart") == "on-failure"


def test_service_user_and_directories(service):
    s = service["Service"]
    assert one(s, "User") == "edgeworker"
    assert one(s, "Group") == "edgeworker"
    assert one(s, "RemoveIPC") == "yes"
    assert one(s, "RuntimeDirectory") == "edgeworker"
    assert "DynamicUser" not in s  # a fixed system user: shm objects must keep one owner
    text = (UNITS / "edgeworker.service").read_text()
    assert 'pid_file = "/run/edgeworker/edgeworker.pid"' in text


def test_service_hardening(service):
    s = service["Service"]
    assert one(s, "NoNewPrivileges") == "yes"
    assert one(s, "ProtectSystem") == "strict"
    assert one(s, "ProtectHome") == "yes"
    assert one(s, "PrivateTmp") == "yes"
    assert one(s, "AmbientCapabilities") == "CAP_NET_BIND_SERVICE"
    assert one(s, "CapabilityBoundingSet") == "CAP_NET_BIND_SERVICE"
    assert int(one(s, "LimitNOFILE")) >= 65536


def test_service_keeps_dev_shm_reachable(service):
    s = service["Service"]
    hiding = ("TemporaryFileSystem", "InaccessiblePaths", "ReadOnlyPaths", "BindReadOnlyPaths")
    for key in hiding:
        for value in s.get(key, []):
            for path in value.split():
                path = path.lstrip("-+").rstrip("/") or "/"
                covers = path in ("/", "/dev", "/dev/shm") or path.startswith("/dev/shm/")
                assert not covers, f"{key}={value} hides the shared dicts in /dev/shm"
    # ProtectSystem=strict keeps the /dev API tree writable; PrivateTmp touches /tmp only
    assert one(s, "ProtectSystem") == "strict"


def test_service_install(service):
    assert service["Install"]["WantedBy"] == ["multi-user.target"]


def test_socket_unit(socket_unit):
    s = socket_unit["Socket"]
    assert "127.0.0.1:8080" in s["ListenStream"]
    assert one(s, "Service") == "edgeworker.service"
    assert one(s, "Accept") == "no"  # one master takes every connection, not inetd style
    assert "PartOf" not in socket_unit.get("Unit", {})  # listeners must outlive a restart
    assert socket_unit["Install"]["WantedBy"] == ["sockets.target"]


# -- systemd-analyze ----------------------------------------------------------------------------

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.usefixtures("systemd_analyze")


@pytest.fixture
def systemd_analyze() -> str:
    """systemd-analyze: a skip without it, a failure under CI=1."""
    return require_tool("systemd-analyze", "systemd")


def systemd_version() -> int:
    out = subprocess.run([ANALYZE, "--version"], capture_output=True, text=True, check=True)
    return int(re.match(r"systemd (\d+)", out.stdout).group(1))


def edgeworker_executable() -> str:
    """The installed ``edgeworker`` script of this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "edgeworker"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("edgeworker")
    assert found, "the edgeworker command is not installed (pip install -e .)"
    return found


def stage(tmp_path: Path, service_text: str | None = None, with_dropin: bool = False) -> Path:
    """Copies of the units (and the drop-in) with the real ``edgeworker`` path substituted."""
    exe = edgeworker_executable()
    service_text = service_text or (UNITS / "edgeworker.service").read_text()
    (tmp_path / "edgeworker.service").write_text(service_text.replace(BINARY, exe))
    (tmp_path / "edgeworker.socket").write_text(
        (UNITS / "edgeworker.socket").read_text().replace(BINARY, exe)
    )
    if with_dropin:
        # systemd-analyze reads drop-ins from NAME.service.d/ beside the unit file
        folder = tmp_path / "edgeworker.service.d"
        folder.mkdir()
        (folder / DROPIN.name).write_text(DROPIN.read_text().replace(BINARY, exe))
    return tmp_path / "edgeworker.service"


def verify(*units: Path) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [
            ANALYZE,
            "verify",
            "--man=no",
            "--generators=no",
            "--recursive-errors=no",
            *map(str, units),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return proc.returncode, lines


@needs_analyze
def test_systemd_analyze_verify_units(tmp_path):
    service_path = stage(tmp_path)
    rc, lines = verify(service_path, tmp_path / "edgeworker.socket")
    assert rc == 0 and lines == [], lines


@needs_analyze
def test_systemd_analyze_verify_notify_reload_dropin(tmp_path):
    service_path = stage(tmp_path, with_dropin=True)
    rc, lines = verify(service_path)
    if systemd_version() >= 253:
        assert rc == 0 and lines == [], lines
        return
    # systemd 252 and older know neither notify-reload nor ReloadSignal=: the drop-in's two
    # lines are what they ignore (the unit then stays Type=notify), nothing else
    unexpected = [ln for ln in lines if not any(p.search(ln) for p in OLD_SYSTEMD_NOTES)]
    assert unexpected == [], lines
    assert all(any(p.search(ln) for ln in lines) for p in OLD_SYSTEMD_NOTES), lines
    assert all(DROPIN.name in ln for ln in lines), lines


@needs_analyze
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    text = (UNITS / "edgeworker.service").read_text()
    service_path = stage(tmp_path, text.replace(f"{BINARY} run", "/nonexistent/edgeworker run"))
    rc, lines = verify(service_path)
    assert rc != 0
    assert any("/nonexistent/edgeworker" in ln for ln in lines), lines


@needs_analyze
def test_security_exposure_is_low(tmp_path):
    service_path = stage(tmp_path)
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--man=no", str(service_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    if found is None:
        pytest.skip(f"systemd-analyze security --offline unsupported here: {proc.stderr[:200]}")
    assert float(found.group(1)) <= 4.5, proc.stdout


# -- the unit's ExecReload= against a real master ------------------------------------------------

RELOAD_CONF = """
[[server]]
listen = ["127.0.0.1:{port}"]
  [[server.location]]
  match = "/"
  return = {{ status = 200, body = "ok" }}
"""


def exec_reload(config: Path) -> list[str]:
    """The unit's ``ExecReload=`` command line, with the real executable and a test config."""
    argv = one(parse_unit((UNITS / "edgeworker.service").read_text())["Service"], "ExecReload")
    words = argv.split()
    assert words[0] == BINARY and CONFIG in words, argv
    return [edgeworker_executable(), *(str(config) if w == CONFIG else w for w in words[1:])]


def test_exec_reload_reloads_and_refuses_a_broken_config(server, tmp_path):
    """What `systemctl reload` runs: the master reports RELOADING=1 + MONOTONIC_USEC, then READY=1
    (what Type=notify and Type=notify-reload both expect); a broken config exits 1 untouched."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    try:
        srv = server(RELOAD_CONF, env={"NOTIFY_SOCKET": path})
        assert sock.recv(4096).decode().startswith("READY=1")
        done = subprocess.run(exec_reload(srv.config), capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        reloading = sock.recv(4096).decode().splitlines()
        assert reloading[0] == "RELOADING=1"
        assert re.fullmatch(r"MONOTONIC_USEC=\d+", reloading[1]), reloading
        assert sock.recv(4096).decode().startswith("READY=1")
        assert "reloaded: generation 1 serving" in srv.errors()

        good = srv.config.read_text()
        srv.config.write_text(good.replace('return = { status = 200, body = "ok" }', "return = 7"))
        done = subprocess.run(exec_reload(srv.config), capture_output=True, text=True, timeout=60)
        assert done.returncode == 1
        assert str(srv.config) in done.stderr
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):  # the master was never signalled
            sock.recv(4096)
        assert srv.get("/")[0] == 200
    finally:
        sock.close()
