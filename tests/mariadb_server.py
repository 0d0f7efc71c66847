"""A real MariaDB server for the tests: ``mariadbd`` on a free loopback port in a temp datadir.

``mariadb-install-db`` makes the datadir (about 3 s), ``mariadbd`` starts in well under a second
with a small buffer pool and no name resolution; as root it runs with ``--user=root`` (mariadbd
refuses root otherwise). With ``tls=True`` it also accepts TLS, with a certificate for 127.0.0.1
issued by a CA made here. ``stop()`` shuts it down and removes the datadir.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

from .support import free_port, require_tool
from .tls_certs import CertFactory


class MariaDB:
    """A MariaDB server with the database ``test`` and the user ``edge`` (password ``edge``),
    reachable on ``127.0.0.1:port``."""

    user = "edge"
    password = "edge"
    database = "test"

    def __init__(self, tls: bool = False) -> None:
        self.mariadbd = require_tool("mariadbd", "mariadb-server")
        self.install_db = require_tool("mariadb-install-db", "mariadb-server")
        self.dir = Path(tempfile.mkdtemp(prefix="ew-mariadb-"))
        self.datadir = self.dir / "data"
        self.socket = self.dir / "mariadb.sock"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.as_root = ["--user=root"] if os.geteuid() == 0 else []
        self.tls_args: list[str] = []
        #: the CA of the server's certificate (for 127.0.0.1) when started with ``tls=True``
        self.ca: Path | None = None
        if tls:
            ca = CertFactory(self.dir / "certs").ca("mariadb")
            issued = ca.server(["localhost"], file="mariadb")
            self.ca = ca.path
            self.tls_args = [
                f"--ssl-ca={ca.path}",
                f"--ssl-cert={issued.cert}",
                f"--ssl-key={issued.key}",
            ]

    def start(self, timeout: float = 30.0) -> MariaDB:
        log = self.dir / "install.log"
        with open(log, "wb") as out:
            done = subprocess.run(
                [
                    self.install_db,
                    "--no-defaults",
                    f"--datadir={self.datadir}",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                    "--skip-name-resolve",
                    *self.as_root,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=120,
            )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed:\n{log.read_text(errors='replace')}")
        init = self.dir / "init.sql"
        init.write_text(
            f"CREATE DATABASE {self.database};\n"
            f"CREATE USER '{self.user}'@'127.0.0.1' IDENTIFIED BY '{self.password}';\n"
            f"GRANT ALL ON {self.database}.* TO '{self.user}'@'127.0.0.1';\n"
        )
        self.proc = subprocess.Popen(
            [
                self.mariadbd,
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.dir / 'mariadb.pid'}",
                f"--log-error={self.dir / 'error.log'}",
                f"--init-file={init}",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=16M",
                "--max-connections=300",
                *self.tls_args,
                *self.as_root,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.connect().close()
                return self
            except pymysql.MySQLError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mariadbd did not start:\n{self.error_log()}") from None
                time.sleep(0.05)

    def connect(self) -> pymysql.connections.Connection:
        """A connection of the test user over TCP, to the test database."""
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database,
            connect_timeout=1,
            autocommit=True,
        )

    def sql(self, statement: str, args: tuple | None = None) -> list[tuple]:
        """Run one statement as the test user and return its rows."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(statement, args)
                return list(cur.fetchall())
        finally:
            conn.close()

    def env(self) -> dict[str, str]:
        """The MYSQL_* variables of the recipe in config/examples/mysql_pool.toml."""
        return {
            "MYSQL_HOST": "127.0.0.1",
            "MYSQL_PORT": str(self.port),
            "MYSQL_USER": self.user,
            "MYSQL_PASSWORD": self.password,
            "MYSQL_DATABASE": self.database,
        }

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean shutdown
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
