"""A private PostgreSQL server on loopback for tests and benchmarks: initdb into a temp dir with
trust auth for local connections, started on a free port, removed afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from vpp_aggregator.devservices.ports import free_port


class PostgresUnavailableError(RuntimeError):
    """PostgreSQL's server binaries are not installed (Debian: `apt-get install postgresql`)."""


def server_bin() -> Path | None:
    """Debian keeps the server binaries off PATH, under /usr/lib/postgresql/<major>/bin."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if debian:
        return debian[-1].parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


class PrivatePostgres:
    """Owned by the `postgres` user when we are root (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        bindir = server_bin()
        if bindir is None:
            raise PostgresUnavailableError("no PostgreSQL server binaries (initdb) found")
        self.bin = bindir
        self.as_user = "postgres" if os.geteuid() == 0 else None
        if self.as_user and shutil.which("runuser") is None:
            raise PostgresUnavailableError("running as root needs runuser to start PostgreSQL")
        self.dir = Path(tempfile.mkdtemp(prefix="vpp-pg-"))
        self.dir.chmod(0o755)
        if self.as_user:
            shutil.chown(self.dir, self.as_user, self.as_user)
        self.port = free_port()
        self._run(["initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust", "-N"])

    def _run(self, args: list[str]) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_user:
            command = ["runuser", "-u", self.as_user, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise PostgresUnavailableError(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()[-800:]}"
            )

    @property
    def url(self) -> str:
        """The admin database's URL; tests create their own databases from it."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c max_connections=300"
        )
        data, log = str(self.dir / "data"), str(self.dir / "log")
        self._run(["pg_ctl", "-D", data, "-l", log, "-o", opts, "-w", "-t", "120", "start"])

    def stop(self) -> None:
        self._run(["pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
