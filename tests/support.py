"""Helpers for the integration tests: real `edgeworker run` processes, raw loopback HTTP."""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edgeworker import testing

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
EDGEWORKER = [sys.executable, "-m", "edgeworker"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_tool(name: str, package: str, *other_names: str) -> str:
    """The path of the program ``name`` (or of the first of ``other_names`` found).

    When none is installed the calling test (or, at module level, the module) is skipped; under
    ``CI=1`` it fails instead, naming the program and the Debian package that provides it.
    """
    for candidate in (name, *other_names):
        path = shutil.which(candidate)
        if path:
            return path
    message = f"{name} is not installed (Debian package {package!r}: apt-get install {package})"
    if os.environ.get("CI", "") not in ("", "0", "false"):
        pytest.fail(f"{message}; CI=1 needs it (scripts/system-deps.sh installs it)", pytrace=False)
    pytest.skip(message, allow_module_level=True)


def wait_until(
    fn: Callable[[], T],
    until: Callable[[T], Any] = bool,
    *,
    timeout: float = 5.0,
    what: str = "the condition",
    show: Callable[[T], Any] | None = None,
    interval: float = 0.1,
) -> T:
    """Call ``fn`` until ``until`` holds for what it returns, and return that value.

    After ``timeout`` seconds the test fails naming ``what`` with the last value (or the part of
    it that ``show`` picks).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            last = repr(show(value) if show is not None else value)
            if len(last) > 2000:
                last = last[:2000] + "..."
            raise AssertionError(f"{what}: not reached within {timeout}s; last value: {last}")
        time.sleep(interval)


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


class Server(testing.Server):
    """``edgeworker.testing.Server`` on a config written into a temp folder, on a port chosen
    here (so that the config may name it), with helpers for raw HTTP and the CLI.

    ``toml`` may use ``{port}`` (a free port chosen here) and ``{dir}`` (the folder);
    ``files`` maps file names (handler modules) to their source.
    """

    def __init__(self, tmp: Path, toml: str, files: dict[str, str] | None = None, workers: int = 1,
                 env: dict[str, str] | None = None) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(tmp / "edgeworker.toml", workers=workers, env=env, workdir=tmp)
        port = free_port()
        self.access_log = tmp / "access.log"
        for name, src in (files or {}).items():
            (tmp / name).write_text(textwrap.dedent(src))
        text = textwrap.dedent(toml).format(port=port, dir=tmp)
        if "[main]" not in text:
            text = "[main]\n" + text
        head = (
            f'pid_file = "{self.pid_file}"\nerror_log = "{self.error_log_file}"\n'
            f'workers = {workers}\npython_path = ["."]\n'
        )
        text = text.replace("[main]\n", "[main]\n" + head, 1)
        if "[http]" not in text:
            text = text.replace("[main]\n", f'[http]\naccess_log = "{self.access_log}"\n\n[main]\n', 1)
        elif "access_log =" not in text:
            text = text.replace("[http]\n", f'[http]\naccess_log = "{self.access_log}"\n', 1)
        self.config.write_text(text)
        self.running_config = self.config
        self.listeners = [testing.Listener("127.0.0.1", port, f"127.0.0.1:{port} ssl" in text)]

    def _prepare(self) -> None:
        """The config is run as written (its port is fixed: a proxy_pass may name it)."""

    def wait_pid_file(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.pid_file.exists() and self.pid_file.read_text().strip():
                return
            time.sleep(0.05)
        raise TimeoutError("no pid file")

    def wait_log(self, text: str, timeout: float = 15.0, count: int = 1) -> None:
        """Wait until the error log holds ``text`` (``count`` times)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.errors().count(text) >= count:
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} not in the error log after {timeout}s")

    def access_lines(self, n: int, timeout: float = 5.0) -> list[str]:
        """The access log's lines once it has at least ``n`` (fails after ``timeout``)."""
        return wait_until(
            lambda: self.access_log.read_text().splitlines() if self.access_log.exists() else [],
            lambda lines: len(lines) >= n,
            timeout=timeout,
            interval=0.05,
            what=f"{n} access log lines",
        )

    def worker_pids(self) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(p) for p in out.split()]

    def errors(self) -> str:
        return self.error_log()

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run([*EDGEWORKER, *args, "-c", str(self.config)], capture_output=True,
                              text=True, timeout=60, check=check)

    # ------------------------------------------------------------ HTTP
    def conn(self, timeout: float = 10.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        c = self.conn(timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def get(self, path: str, **kw) -> tuple[int, dict[str, str], bytes]:
        return self.request("GET", path, **kw)

    def raw(self, data: bytes, timeout: float = 5.0, shut: bool = False) -> bytes:
        """Send raw bytes, return everything the server sends until it closes (or timeout)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
            return read_all(s, timeout)


def read_all(s: socket.socket, timeout: float = 5.0) -> bytes:
    s.settimeout(timeout)
    chunks = []
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    line = response.split(b"\r\n", 1)[0]
    return int(line.split()[1])


def split_responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Split a byte stream of Content-Length framed responses (as pipelining produces)."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode()
        n = int(headers.get("content-length", "0"))
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out


def self_signed_cert(folder: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for ``name`` and 127.0.0.1 (its own CA): (cert, key) PEM."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
