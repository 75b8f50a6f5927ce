"""Real single-node Apache Kafka (KRaft) clusters on loopback, from Maven Central jars.

Stdlib only, so it runs before the project's environment exists. As a module (tests, demo,
benchmarks) it offers ``ensure_jars``, ``start_clusters`` and ``stop_clusters``; as a script:

    python deploy/local/localkafka.py jars
    python deploy/local/localkafka.py up --names province,city,county --base-port 19092 --dir DIR
    python deploy/local/localkafka.py status --dir DIR
    python deploy/local/localkafka.py down --dir DIR

Cluster i of ``up`` listens on base-port + 10000*i (its controller on the next port). Brokers are
stopped by the process ids recorded at start, never by name.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

KAFKA_VERSION = "4.1.2"
HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.properties"
JVM_FLAGS = (
    "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
)  # fmt: skip
MIN_JAVA = 17
_CHILDREN: dict[
    int, subprocess.Popen[bytes]
] = {}  # brokers this process started, kept to reap them


class LocalKafkaError(RuntimeError):
    """Kafka could not be fetched, started or stopped; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """One single-node cluster to start."""

    name: str
    port: int
    controller_port: int
    host: str = "127.0.0.1"
    heap_mb: int = 512


@dataclass
class Cluster:
    """A running broker."""

    spec: ClusterSpec
    data_dir: Path
    log_path: Path
    pid: int

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use."""
        return f"{self.spec.host}:{self.spec.port}"


def cache_dir() -> Path:
    """Where the jars live: outside git, shared between checkouts."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cascade-node" / f"kafka-{KAFKA_VERSION}"


def ensure_jars() -> Path:
    """Return the folder of Kafka's runtime jars, fetching them with Maven if missing."""
    libs = cache_dir() / "libs"
    marker = cache_dir() / "complete"
    if marker.exists() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    if shutil.which("mvn") is None:
        raise LocalKafkaError("Maven (mvn) is not installed; install it (apt-get install maven)")
    if libs.exists():
        shutil.rmtree(libs)
    command = [
        "mvn", "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={libs}",
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=1200, check=False)
    except subprocess.TimeoutExpired as error:
        raise LocalKafkaError(
            "Maven did not finish fetching Kafka jars within 20 minutes"
        ) from error
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise LocalKafkaError(f"Maven could not fetch Kafka {KAFKA_VERSION} jars:\n{tail}")
    marker.write_text(KAFKA_VERSION)
    return libs


def check_java() -> str:
    """Return the java executable; raise if Java is missing or older than 17."""
    java = shutil.which("java", path=_java_path())
    if java is None:
        raise LocalKafkaError("Java is not installed; Kafka needs Java 17 or newer")
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', result.stderr)
    if match is None or int(match.group(1)) < MIN_JAVA:
        raise LocalKafkaError(f"Kafka needs Java {MIN_JAVA}+, found: {result.stderr.strip()}")
    return java


def _java_path() -> str | None:
    home = os.environ.get("JAVA_HOME")
    return f"{home}/bin{os.pathsep}{os.environ.get('PATH', '')}" if home else None


def port_free(host: str, port: int) -> bool:
    """Tell whether nothing listens on host:port."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def broker_properties(spec: ClusterSpec, data_dir: Path) -> str:
    """The server.properties of a single-node broker+controller."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{spec.host}:{spec.controller_port}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://{spec.host}:{spec.port},CONTROLLER://{spec.host}:{spec.controller_port}",
        "advertised.listeners": f"PLAINTEXT://{spec.host}:{spec.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir / "log"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "4",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.dedupe.buffer.size": str(8 * 1024 * 1024),
        "log.cleaner.threads": "1",
        "message.max.bytes": str(8 * 1024 * 1024),
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def _cluster_id(data_dir: Path) -> str:
    """Return the id the data dir was formatted with, or a fresh one."""
    meta = data_dir / "log" / "meta.properties"
    if meta.exists():
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()


def _java_command(java: str, libs: Path, heap_mb: int, main: str, *args: str) -> list[str]:
    return [
        java, f"-Xms{heap_mb}m", f"-Xmx{heap_mb}m", *JVM_FLAGS,
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp", f"{libs}/*", main, *args,
    ]  # fmt: skip


def metadata_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """Tell whether a broker answers a Metadata (v1) request listing at least one broker."""
    client = b"localkafka"
    body = struct.pack(">hhih", 3, 1, 1, len(client)) + client + struct.pack(">i", -1)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _read(conn, 4))[0]
            response = _read(conn, size)
    except (OSError, struct.error):
        return False
    correlation, brokers = struct.unpack(">ii", response[:8])
    return bool(correlation == 1 and brokers >= 1)


def _read(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start_clusters(
    specs: Sequence[ClusterSpec], base_dir: Path, timeout: float = 90.0
) -> list[Cluster]:
    """Format and start every cluster concurrently; wait until each answers metadata requests.

    Raises LocalKafkaError (after stopping whatever it started) if Java is missing, a port is
    taken, or a broker is not ready within ``timeout`` seconds (the message has its log tail).
    """
    java = check_java()
    libs = ensure_jars()
    for spec in specs:
        for port in (spec.port, spec.controller_port):
            if not port_free(spec.host, port):
                raise LocalKafkaError(f"cluster {spec.name}: port {spec.host}:{port} is taken")
    started: list[Cluster] = []
    try:
        for spec in specs:
            started.append(_start_one(java, libs, spec, base_dir / spec.name))
        deadline = time.monotonic() + timeout
        for cluster in started:
            _wait_ready(cluster, deadline, timeout)
    except BaseException:
        stop_clusters(started)
        raise
    return started


def _start_one(java: str, libs: Path, spec: ClusterSpec, data_dir: Path) -> Cluster:
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "server.properties"
    config.write_text(broker_properties(spec, data_dir))
    log_path = data_dir / "broker.log"
    storage = _java_command(
        java, libs, 256, "kafka.tools.StorageTool",
        "format", f"--cluster-id={_cluster_id(data_dir)}", "-c", str(config), "--ignore-formatted",
    )  # fmt: skip
    result = subprocess.run(storage, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise LocalKafkaError(
            f"cluster {spec.name}: formatting failed:\n{result.stdout}{result.stderr}"
        )
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            _java_command(java, libs, spec.heap_mb, "kafka.Kafka", str(config)),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    _CHILDREN[process.pid] = process
    return Cluster(spec, data_dir, log_path, process.pid)


def _wait_ready(cluster: Cluster, deadline: float, timeout: float) -> None:
    while not metadata_ready(cluster.spec.host, cluster.spec.port):
        if not _alive(cluster.pid):
            raise LocalKafkaError(
                f"broker {cluster.spec.name} exited during start-up; log tail:\n{_tail(cluster.log_path)}"
            )
        if time.monotonic() > deadline:
            raise LocalKafkaError(
                f"broker {cluster.spec.name} not ready after {timeout:.0f} s; log tail:\n"
                f"{_tail(cluster.log_path)}"
            )
        time.sleep(0.25)


def _alive(pid: int) -> bool:
    """Tell whether ``pid`` is a running (not zombie) process; reap it if it is our exited child."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _is_broker(pid: int) -> bool:
    try:
        return b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def stop_clusters(clusters: Sequence[Cluster], timeout: float = 30.0) -> None:
    """SIGTERM each broker by pid, wait, SIGKILL after ``timeout``."""
    targets = [c for c in clusters if _alive(c.pid) and _is_broker(c.pid)]
    for cluster in targets:
        os.kill(cluster.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for cluster in targets:
        while _alive(cluster.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(cluster.pid):
            os.kill(cluster.pid, signal.SIGKILL)
            while _alive(cluster.pid):
                time.sleep(0.05)


def _state_file(directory: Path) -> Path:
    return directory / "state.json"


def _load_state(directory: Path) -> list[Cluster]:
    try:
        entries = json.loads(_state_file(directory).read_text())
    except OSError as error:
        raise LocalKafkaError(f"no clusters recorded in {directory} ({error.strerror})") from error
    return [
        Cluster(ClusterSpec(**e["spec"]), Path(e["data_dir"]), Path(e["log_path"]), e["pid"])
        for e in entries
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description="Local single-node Kafka clusters on loopback.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("jars", help="fetch the pinned Kafka jars (if missing); print their folder")
    up = commands.add_parser("up", help="start clusters and leave them running")
    up.add_argument("--names", default="province,city,county")
    up.add_argument("--base-port", type=int, default=19092)
    up.add_argument("--heap-mb", type=int, default=512)
    for command in (up, commands.add_parser("status"), commands.add_parser("down")):
        command.add_argument("--dir", type=Path, default=Path(".local/kafka"))
    args = parser.parse_args(argv)
    try:
        if args.command == "jars":
            print(ensure_jars())
        elif args.command == "up":
            specs = [
                ClusterSpec(name, args.base_port + 10000 * i, args.base_port + 10000 * i + 1,
                            heap_mb=args.heap_mb)
                for i, name in enumerate(args.names.split(","))
            ]  # fmt: skip
            clusters = start_clusters(specs, args.dir.resolve())
            _state_file(args.dir).write_text(json.dumps([
                {"spec": _spec_dict(c.spec),
                 "data_dir": str(c.data_dir), "log_path": str(c.log_path), "pid": c.pid}
                for c in clusters
            ]))  # fmt: skip
            for cluster in clusters:
                print(f"{cluster.spec.name} {cluster.bootstrap}")
        elif args.command == "status":
            healthy = True
            for cluster in _load_state(args.dir):
                ready = _alive(cluster.pid) and metadata_ready(cluster.spec.host, cluster.spec.port)
                healthy &= ready
                print(f"{cluster.spec.name} {cluster.bootstrap} pid {cluster.pid} "
                      f"{'ready' if ready else 'DOWN'}")  # fmt: skip
            return 0 if healthy else 1
        else:
            stop_clusters(_load_state(args.dir))
            _state_file(args.dir).unlink()
    except LocalKafkaError as error:
        print(f"localkafka: {error}", file=sys.stderr)
        return 1
    return 0


def _spec_dict(spec: ClusterSpec) -> dict[str, object]:
    return {name: getattr(spec, name) for name in spec.__slots__}


if __name__ == "__main__":
    sys.exit(main())
