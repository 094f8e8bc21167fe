"""Apache Kafka on loopback for tests and benchmarks: the real broker, from Maven Central.

The broker's jars are resolved once by the machine's Maven into a cache outside the repository
(`VPP_KAFKA_CACHE`, default `~/.cache/vpp-aggregator`), then each node runs on the machine's JDK
in KRaft mode (every node both broker and controller), formatted fresh in a temp dir. Its log
goes at WARN to a file beside its data, so a failing test can still read why.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from devservices.children import dying_with_parent
from devservices.ports import free_port, listening

KAFKA_VERSION = "4.1.1"  # org.apache.kafka:kafka_2.13; docker-compose.yml pins the same
SLF4J_BINDING = "org.apache.logging.log4j:log4j-slf4j-impl:2.24.3"  # Kafka's own log4j2 version


class KafkaUnavailableError(RuntimeError):
    """No JDK or Maven on this machine, or Maven could not resolve the broker."""


def cache_dir() -> Path:
    base = os.environ.get("VPP_KAFKA_CACHE") or str(Path.home() / ".cache" / "vpp-aggregator")
    return Path(base) / f"kafka-{KAFKA_VERSION}"


def tools_present() -> bool:
    return shutil.which("java") is not None and shutil.which("mvn") is not None


def _pom() -> str:
    group, artifact, version = SLF4J_BINDING.split(":")
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.vpp-aggregator</groupId>
  <artifactId>kafka-broker-classpath</artifactId>
  <version>{KAFKA_VERSION}</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>{group}</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""


def classpath() -> str:
    """The broker's runtime classpath, resolving it with Maven the first time (about 10-60 s)."""
    if not tools_present():
        raise KafkaUnavailableError("Apache Kafka needs a JDK (java) and Maven (mvn) on PATH")
    home = cache_dir()
    home.mkdir(parents=True, exist_ok=True)
    saved = home / "classpath.txt"
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one resolver at a time (parallel test workers)
        if saved.exists():
            jars = saved.read_text().strip()
            if jars and all(Path(j).exists() for j in jars.split(os.pathsep)):
                return jars
        (home / "pom.xml").write_text(_pom())
        result = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(home / "pom.xml"),
                "dependency:build-classpath",
                "-Dmdep.includeScope=runtime",
                f"-Dmdep.outputFile={saved}",
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0 or not saved.exists():
            tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
            raise KafkaUnavailableError(
                f"Maven could not resolve kafka_2.13 {KAFKA_VERSION}:\n" + "\n".join(tail)
            )
        return saved.read_text().strip()


def new_cluster_id() -> str:
    """A KRaft cluster id (16 random bytes, URL-safe base64) that does not start with "-": the
    storage tool's argument parser would take that for an option (seen: 1 format in ~64 failed)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


LOG4J2 = """status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = file
"""


@dataclass
class KafkaNode:
    """One KRaft node (broker and controller in one JVM) of a `KafkaCluster`."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def listening(self) -> bool:
        return listening(self.port)


@dataclass
class KafkaCluster:
    """`size` Apache Kafka nodes on loopback; topics default to min(size, 3) replicas and
    min.insync.replicas = min(size, 2), so a three-node cluster rides out one node's loss."""

    size: int = 1
    heap_mb: int = 512
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vpp-kafka-")))
    nodes: list[KafkaNode] = field(default_factory=list)
    cluster_id: str = ""
    _classpath: str = ""

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    def start(self, timeout_s: float = 120.0) -> KafkaCluster:
        """Format and start every node; on any failure nothing is left running."""
        try:
            return self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> KafkaCluster:
        self._classpath = classpath()
        self.cluster_id = new_cluster_id()
        self.nodes = [
            KafkaNode(i + 1, free_port(), free_port(), self.root / f"node-{i + 1}")
            for i in range(self.size)
        ]
        for node in self.nodes:
            node.directory.mkdir(parents=True)
            self._write_config(node)
            self._java(node, "kafka.tools.StorageTool", "format", "-t", self.cluster_id, "-c",
                       str(node.directory / "server.properties"), wait=True)  # fmt: skip
        for node in self.nodes:
            self.start_node(node)
        self.wait_ready(timeout_s)
        return self

    def _write_config(self, node: KafkaNode) -> None:
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        replicas = min(self.size, 3)
        settings = {
            "process.roles": "broker,controller",
            "node.id": node.node_id,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": node.directory / "data",
            "num.partitions": 1,
            "default.replication.factor": replicas,
            "min.insync.replicas": min(self.size, 2),
            "offsets.topic.replication.factor": replicas,
            "offsets.topic.num.partitions": 10,
            "transaction.state.log.replication.factor": replicas,
            "transaction.state.log.min.isr": min(self.size, 2),
            "transaction.state.log.num.partitions": 10,
            "share.coordinator.state.topic.replication.factor": replicas,
            "share.coordinator.state.topic.min.isr": min(self.size, 2),
            "group.initial.rebalance.delay.ms": 0,
            "unclean.leader.election.enable": "false",
        }
        text = "".join(f"{k}={v}\n" for k, v in settings.items())
        (node.directory / "server.properties").write_text(text)
        (node.directory / "log4j2.properties").write_text(
            LOG4J2.format(path=node.directory / "server.log")
        )

    def _java(
        self, node: KafkaNode, main: str, *args: str, wait: bool = False
    ) -> subprocess.Popen[bytes]:
        command = [
            "java",
            f"-Xmx{self.heap_mb}m",
            "-Xms64m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={node.directory / 'log4j2.properties'}",
            "-cp",
            self._classpath,
            main,
            *args,
        ]
        out = (node.directory / "stdout.log").open("ab")
        proc = subprocess.Popen(
            dying_with_parent(command), stdout=out, stderr=subprocess.STDOUT, cwd=node.directory
        )
        out.close()
        if wait and proc.wait(timeout=120) != 0:
            said = (node.directory / "stdout.log").read_text(errors="replace").strip()[-1500:]
            raise KafkaUnavailableError(f"{main} {args[0]} failed ({proc.returncode}): {said}")
        return proc

    def start_node(self, node: KafkaNode) -> None:
        """Start (or restart, keeping its data) one node."""
        node.proc = self._java(node, "kafka.Kafka", str(node.directory / "server.properties"))

    def kill_node(self, node: KafkaNode) -> None:
        """SIGKILL, as a crash: no controlled shutdown, no leadership handed over."""
        if node.proc is not None and node.proc.poll() is None:
            os.kill(node.proc.pid, signal.SIGKILL)
            node.proc.wait(timeout=30)

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Until every live node is registered with the controller and answers metadata."""
        from confluent_kafka.admin import AdminClient

        live = [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            for n in live:
                if n.proc is not None and n.proc.poll() is not None:
                    raise KafkaUnavailableError(
                        f"Kafka node {n.node_id} exited with {n.proc.returncode}: "
                        f"see {n.directory}/stdout.log and server.log"
                    )
            if all(n.listening() for n in live):
                try:
                    admin = AdminClient({"bootstrap.servers": self.bootstrap})
                    brokers = admin.list_topics(timeout=2).brokers
                    if len(brokers) >= len(live):
                        return
                    last = f"{len(brokers)} of {len(live)} brokers registered"
                except Exception as exc:
                    last = str(exc)
            time.sleep(0.2)
        raise KafkaUnavailableError(f"Kafka cluster not ready within {timeout_s:g} s ({last})")

    def stop(self) -> None:
        """Kill every node and remove the data: nothing is kept, so no controlled shutdown
        (which waits on a quorum that is going away too) is worth waiting for."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self.kill_node(node)
        shutil.rmtree(self.root, ignore_errors=True)
