"""A Docker engine and the image's base for the container test.

The engine: the one the `docker` client already reaches, or else Debian's `dockerd` started
here on a private socket. This machine has no bridge or iptables to offer, so it runs with
both off and containers use the host's network (`--network host`), which keeps everything on
loopback. Its data root stays between runs, so a second run reuses the base image and the
dependency layers.

The base image: pulled when a registry answers; otherwise a stand-in built under the same tag
from Debian's packages (`debootstrap` of the release the official image is built on, with
`python3`, `python3-pip`, `python3-venv`, a `python` command and no `EXTERNALLY-MANAGED` marker,
as in the official image). The stand-in carries a label saying what it is."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devservices.children import dying_with_parent

BASE_IMAGE = "python:3.11-slim-bookworm"  # the Dockerfile's default BASE_IMAGE
DEBIAN_RELEASE = "bookworm"  # the official image's release: its python3 is 3.11, as the tag's
DEBIAN_MIRROR = "http://deb.debian.org/debian"
STAND_IN_LABEL = "org.vpp-aggregator.stand-in"
SOCKET = "/run/vpp-docker/docker.sock"
DATA_ROOT = "/var/lib/vpp-docker"


class DockerUnavailableError(RuntimeError):
    """No Docker engine can run here; the message says why."""


@dataclass
class Engine:
    host: str  # DOCKER_HOST for the client
    how: str  # what was found or started, for the test report
    proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def docker(self, *args: str, timeout: float = 600, check: bool = True) -> str:
        result = subprocess.run(
            ["docker", *args], env=self.env(), capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {result.stderr.strip()[-1500:]}")
        return result.stdout.strip()

    def succeeds(self, *args: str, timeout: float = 60) -> bool:
        return (
            subprocess.run(
                ["docker", *args], env=self.env(), capture_output=True, timeout=timeout
            ).returncode
            == 0
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _answers(host: str | None) -> bool:
    env = {**os.environ, **({"DOCKER_HOST": host} if host else {})}
    try:
        return (
            subprocess.run(
                ["docker", "info", "--format", "{{.ServerVersion}}"],
                env=env,
                capture_output=True,
                timeout=20,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def _apt_install(*packages: str) -> None:
    """Debian's packages, as root; a clear error where that cannot be done."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise DockerUnavailableError(f"{' '.join(packages)} missing (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"]
    install += ["--no-install-recommends", *packages]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise DockerUnavailableError(
                f"apt-get install {' '.join(packages)}: {done.stderr[-500:]}"
            )


def engine(timeout_s: float = 120.0) -> Engine:
    """An engine that answers: the client's own, ours from an earlier run, or a new `dockerd`."""
    if shutil.which("docker") is None:
        _apt_install("docker.io")
    if _answers(os.environ.get("DOCKER_HOST")):
        return Engine(
            os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"), "running engine"
        )
    host = f"unix://{SOCKET}"
    if _answers(host):
        return Engine(host, f"dockerd already running on {SOCKET}")
    if shutil.which("dockerd") is None:
        _apt_install("docker.io")
    Path(SOCKET).parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for driver in ("overlay2", "vfs"):  # vfs: no overlay mounts in some sandboxes
        log = Path(tempfile.gettempdir()) / f"vpp-dockerd-{driver}.log"
        command = [
            "dockerd",
            f"--host={host}",
            f"--data-root={DATA_ROOT}-{driver}",
            "--exec-root=/run/vpp-docker/exec",
            "--pidfile=/run/vpp-docker/dockerd.pid",
            f"--storage-driver={driver}",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
        ]
        with log.open("wb") as out:
            proc = subprocess.Popen(dying_with_parent(command), stdout=out, stderr=out)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(host):
                return Engine(host, f"dockerd started here ({driver} storage)", proc)
            time.sleep(0.5)
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)
        errors.append(f"{driver}: {log.read_text(errors='replace').strip()[-400:]}")
    raise DockerUnavailableError("dockerd would not start: " + " | ".join(errors))


def base_image(e: Engine, tag: str = BASE_IMAGE) -> str:
    """Make `tag` present: already there, pulled, or a stand-in built now. Returns which."""
    if e.succeeds("image", "inspect", tag):
        label = e.docker(
            "image", "inspect", "--format", f'{{{{index .Config.Labels "{STAND_IN_LABEL}"}}}}', tag
        )
        return f"{tag}: present" + (f" (stand-in: {label})" if label else "")
    pulled = subprocess.run(
        ["docker", "pull", tag], env=e.env(), capture_output=True, text=True, timeout=600
    )
    if pulled.returncode == 0:
        return f"{tag}: pulled"
    reason = pulled.stderr.strip().splitlines()[-1:] or ["no answer"]
    built = stand_in(e, tag)
    return f"{tag}: no registry answered ({reason[0][:160]}); {built}"


def stand_in(e: Engine, tag: str) -> str:
    """A stand-in for the official image, from Debian's packages, tagged `tag`."""
    if shutil.which("debootstrap") is None:
        _apt_install("debootstrap")
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="vpp-base-"))
    try:
        include = "python3,python3-pip,python3-venv,python-is-python3,ca-certificates"
        done = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={include}",
                DEBIAN_RELEASE,
                str(root),
                DEBIAN_MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if done.returncode != 0:
            raise DockerUnavailableError(f"debootstrap failed: {done.stderr.strip()[-600:]}")
        for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
            marker.unlink()  # the official image has none: pip installs into the system
        shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
        (root / "var/lib/apt/lists/partial").mkdir(parents=True)
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        (root / "var/cache/apt/archives/partial").mkdir(parents=True)
        changes = [
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            f"LABEL {STAND_IN_LABEL}=debootstrap-{DEBIAN_RELEASE}",
            'CMD ["python3"]',
        ]
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            ["docker", "import", *[f"--change={c}" for c in changes], "-", tag],
            stdin=tar.stdout,
            env=e.env(),
            capture_output=True,
            text=True,
            timeout=900,
        )
        tar.wait(timeout=60)
        if imported.returncode != 0:
            raise DockerUnavailableError(f"docker import: {imported.stderr.strip()[-600:]}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return (
        f"built a stand-in under that tag from Debian {DEBIAN_RELEASE} (debootstrap, "
        f"{time.monotonic() - began:.0f} s)"
    )
