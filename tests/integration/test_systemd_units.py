"""systemd/edgeworker.service and .socket: required settings, and `systemd-analyze verify`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ..support import require_tool

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
BINARY = "/usr/local/bin/edgeworker"
CONFIG = "/etc/edgeworker/edgeworker.toml"
DEFAULT_GRACEFUL_TIMEOUT = 30.0  # [main] graceful_timeout's default

# what systemd < 253 says about the notify-reload unit (and nothing else is tolerated)
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


def fallback_dropin() -> str:
    """The drop-in for systemd < 253, exactly as systemd/README.md documents it."""
    readme = (UNITS / "README.md").read_text()
    blocks = re.findall(r"```ini\n(.*?)```", readme, flags=re.S)
    matches = [b for b in blocks if "notify-fallback.conf" in b.splitlines()[0]]
    assert len(matches) == 1, "README must document exactly one notify-fallback.conf drop-in"
    return matches[0]


# -- plain parse ------------------------------------------------------------------------------


def test_service_notify_protocol_and_reload(service):
    s = service["Service"]
    assert one(s, "Type") == "notify-reload"
    assert one(s, "ReloadSignal") == "SIGHUP"
    assert one(s, "NotifyAccess") == "main"
    # notify-reload signals the main pid itself; an ExecReload= would reload twice on 253-257
    assert "ExecReload" not in s


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


def test_fallback_dropin_validates_then_signals_main_pid_only():
    dropin = parse_unit(fallback_dropin())["Service"]
    assert one(dropin, "Type") == "notify"
    assert dropin["ExecReload"] == [f"{BINARY} check -c {CONFIG}", "/bin/kill -s HUP $MAINPID"]


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


def stage(tmp_path: Path, service_text: str | None = None) -> tuple[Path, Path]:
    """Copies of the units pointing at a real (dummy) executable instead of the installed one."""
    exe = tmp_path / "edgeworker"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    service_text = service_text or (UNITS / "edgeworker.service").read_text()
    service_path = tmp_path / "edgeworker.service"
    socket_path = tmp_path / "edgeworker.socket"
    service_path.write_text(service_text.replace(BINARY, str(exe)))
    socket_path.write_text((UNITS / "edgeworker.socket").read_text().replace(BINARY, str(exe)))
    return service_path, socket_path


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


def apply_dropin(unit_text: str, dropin_text: str) -> str:
    """The unit with the fallback drop-in merged in by hand (what systemd < 253 ends up with)."""
    dropin = parse_unit(dropin_text)["Service"]
    out = []
    for line in unit_text.splitlines():
        key = line.split("=", 1)[0].strip()
        if key in ("Type", "ReloadSignal"):
            continue
        out.append(line)
        if line.strip() == "[Service]":
            out.append(f"Type={one(dropin, 'Type')}")
            out.extend(f"ExecReload={cmd}" for cmd in dropin["ExecReload"])
    return "\n".join(out) + "\n"


@needs_analyze
def test_systemd_analyze_verify_units(tmp_path):
    service_path, socket_path = stage(tmp_path)
    rc, lines = verify(service_path, socket_path)
    if systemd_version() >= 253:
        assert rc == 0 and lines == [], lines
        return
    # systemd 252 and older know neither notify-reload nor ReloadSignal=: those two notes, nothing else
    unexpected = [ln for ln in lines if not any(p.search(ln) for p in OLD_SYSTEMD_NOTES)]
    assert unexpected == []
    assert all(any(p.search(ln) for ln in lines) for p in OLD_SYSTEMD_NOTES), lines


@needs_analyze
def test_systemd_analyze_verify_fallback_for_old_systemd(tmp_path):
    merged = apply_dropin((UNITS / "edgeworker.service").read_text(), fallback_dropin())
    service_path, socket_path = stage(tmp_path, merged)
    rc, lines = verify(service_path, socket_path)
    assert rc == 0 and lines == [], lines


@needs_analyze
def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path):
    text = (UNITS / "edgeworker.service").read_text()
    merged = apply_dropin(text, fallback_dropin())
    service_path, _ = stage(
        tmp_path, merged.replace(f"{BINARY} run", "/nonexistent/edgeworker run")
    )
    rc, lines = verify(service_path)
    assert rc != 0
    assert any("/nonexistent/edgeworker" in ln for ln in lines), lines


@needs_analyze
def test_security_exposure_is_low(tmp_path):
    service_path, _ = stage(tmp_path)
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
