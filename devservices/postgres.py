"""A private PostgreSQL server on loopback for tests and benchmarks: initdb into a temp dir with
trust auth for local connections, run on a free port as our child (so it ends with us), removed
afterwards."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from devservices.children import dying_with_parent
from devservices.ports import free_port, wait_listening


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
    """Run as the `postgres` user when we are root (PostgreSQL refuses to run as root)."""

    def __init__(self) -> None:
        bindir = server_bin()
        if bindir is None:
            raise PostgresUnavailableError("no PostgreSQL server binaries (initdb) found")
        self.bin = bindir
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailableError("running as root needs a `postgres` user") from None
            self.user = owner.pw_name
        self.dir = Path(tempfile.mkdtemp(prefix="vpp-pg-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self.dir.chmod(0o755)
            if self.user:
                os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._initdb()
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _initdb(self) -> None:
        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]
        # C.UTF-8 always exists on Debian; the caller's LANG may name a locale that is not built.
        result = subprocess.run(
            dying_with_parent([*initdb, "-N", "-E", "UTF8", "--locale=C.UTF-8"], self.user),
            capture_output=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise PostgresUnavailableError(f"initdb failed: {result.stderr.decode()[-800:]}")

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def url(self) -> str:
        """The admin database's URL; tests create their own databases from it."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self, timeout_s: float = 120.0) -> None:
        log = (self.dir / "log").open("ab")
        self.proc = subprocess.Popen(
            dying_with_parent([
                str(self.bin / "postgres"),
                "-D", str(self.data),
                "-p", str(self.port),
                "-k", str(self.dir),
                "-c", "listen_addresses=127.0.0.1",
                "-c", "fsync=off",
                "-c", "max_connections=300",
            ], self.user),
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        try:
            wait_listening(self.port, self.proc, "postgres", timeout_s)
        except RuntimeError as exc:
            said = (self.dir / "log").read_text(errors="replace")[-800:]
            raise PostgresUnavailableError(f"{exc}: {said}") from None

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open sessions are ended, as a restart in production would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def remove(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
