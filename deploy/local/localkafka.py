"""Real single-node Apache Kafka (KRaft) clusters on loopback, from Maven Central jars.

Stdlib only, so it runs before the project's environment exists. As a module (tests, demo,
benchmarks) it offers ``ensure_jars``, ``start_clusters`` and ``stop_clusters``; as a script:

    python deploy/local/localkafka.py jars
    python deploy/local/localkafka.py up --names province,city,county --base-port 19092 --dir DIR
    python deploy/local/localkafka.py status --dir DIR
    python deploy/local/localkafka.py stop NAME --dir DIR     # one cluster; data dir and ports kept
    python deploy/local/localkafka.py start NAME --dir DIR    # start it again where it left off
    python deploy/local/localkafka.py down --dir DIR

Cluster i of ``up`` listens on base-port + 1000*i (its controller on the next port): below the
usual range of ephemeral ports (32768-60999 on Linux), where a client's socket lingering in
TIME-WAIT can hold a port for a minute after a run. Brokers are stopped by the process ids
recorded at start, never by name. ``stop_cluster``, ``restart_cluster`` and ``broker_pid`` take
one cluster down and up again, for fault drills.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

KAFKA_VERSION = "4.1.2"
HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.properties"
JVM_FLAGS = (
    "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
)  # fmt: skip
TOOL_FLAGS = ("-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC")  # short-lived tools
MIN_JAVA = 17
MAVEN_TIMEOUT_S = 1200
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # brokers this process started, to reap them


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
    properties: tuple[tuple[str, str], ...] = ()
    """Extra broker properties, set after (and overriding) the defaults, e.g. an authorizer."""
    format_args: tuple[str, ...] = ()
    """Extra arguments of the storage format, e.g. ``--add-scram`` to create SCRAM users."""


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
    """Return the folder of Kafka's runtime jars, copying them with Maven if missing or incomplete.

    The copy goes to a staging folder that replaces ``libs`` only on success, under a file lock,
    so concurrent callers never see (or start brokers from) a half-copied folder.
    """
    root = cache_dir()
    libs = root / "libs"
    marker = root / "complete"
    if marker.exists() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    if shutil.which("mvn") is None:
        raise LocalKafkaError("Maven (mvn) is not installed; install it (apt-get install maven)")
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / ".lock"):
        if marker.exists() and any(libs.glob("kafka_2.13-*.jar")):
            return libs  # another process finished the copy while we waited
        staging = Path(tempfile.mkdtemp(prefix="libs-", dir=root))
        try:
            _copy_dependencies(staging)
            shutil.rmtree(libs, ignore_errors=True)
            staging.rename(libs)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        marker.write_text(f"{KAFKA_VERSION}\n")
    return libs


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _copy_dependencies(target: Path) -> None:
    command = [
        "mvn", "-B", "-q", "-Dstyle.color=never", "-f", str(POM),
        "org.apache.maven.plugins:maven-dependency-plugin:copy-dependencies",  # version: pom.xml
        "-DincludeScope=runtime", f"-DoutputDirectory={target}",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise LocalKafkaError(
            f"Maven did not finish fetching Kafka {KAFKA_VERSION} jars within "
            f"{MAVEN_TIMEOUT_S // 60} minutes; is Maven Central reachable?"
        ) from error
    if result.returncode != 0:
        output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
        lines = [line for line in output.splitlines() if line.strip() not in ("", "[ERROR]")]
        tail = "\n".join(lines[-30:])
        raise LocalKafkaError(
            f"Maven could not fetch Kafka {KAFKA_VERSION} jars (is Maven Central reachable? "
            f"proxies go in ~/.m2/settings.xml); last lines of mvn:\n{tail}"
        )
    if not any(target.glob("kafka_2.13-*.jar")):
        raise LocalKafkaError(f"Maven succeeded but copied no kafka_2.13 jar into {target}")


def check_java() -> str:
    """Return the java executable; raise if Java is missing or older than 17."""
    java = shutil.which("java", path=_java_path())
    if java is None:
        raise LocalKafkaError(
            f"Java is not installed (no java on PATH or in JAVA_HOME); Kafka needs Java {MIN_JAVA}+"
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)', result.stderr)
    if match is None or int(match.group(1)) < MIN_JAVA:
        found = result.stderr.strip().splitlines()[:1] or ["no version reported"]
        raise LocalKafkaError(f"Kafka needs Java {MIN_JAVA}+, {java} is: {found[0]}")
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


def _check_ports(specs: Sequence[ClusterSpec]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for spec in specs:
        for port in (spec.port, spec.controller_port):
            if (spec.host, port) in seen:
                raise LocalKafkaError(
                    f"cluster {spec.name}: port {spec.host}:{port} is also given to cluster "
                    f"{seen[spec.host, port]}"
                )
            seen[spec.host, port] = spec.name
            if not port_free(spec.host, port):
                raise LocalKafkaError(
                    f"cluster {spec.name}: port {spec.host}:{port} is taken "
                    "(another broker still running? see `ss -ltnp`)"
                )


def broker_properties(spec: ClusterSpec, data_dir: Path) -> str:
    """Return the server.properties of a single-node broker+controller."""
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
    settings.update((key, value) for key, value in spec.properties)
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def new_cluster_id() -> str:
    """Return a fresh cluster id: 16 random bytes in URL-safe base64, unpadded (22 characters).

    Like Kafka's own ``Uuid.randomUuid``, never one starting with '-', which command-line
    parsers take for an option.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def _cluster_id(data_dir: Path) -> str:
    """Return the id the data dir was formatted with (format refuses another), or a fresh one."""
    meta = data_dir / "log" / "meta.properties"
    if meta.exists():
        for line in meta.read_text().splitlines():
            if line.startswith("cluster.id="):
                return line.split("=", 1)[1].strip()
    return new_cluster_id()


def _java_command(java: str, libs: Path, heap_mb: int, main: str, *args: str) -> list[str]:
    return [
        java, f"-Xms{heap_mb}m", f"-Xmx{heap_mb}m", *JVM_FLAGS,
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        "-cp", f"{libs}/*", main, *args,
    ]  # fmt: skip


def metadata_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """Tell whether a broker answers a Metadata (v1) request listing at least one broker."""
    client = b"localkafka"
    # header v1: api_key 3 (Metadata), version 1, correlation id 1, client id; body: null topics
    body = struct.pack(">hhih", 3, 1, 1, len(client)) + client + struct.pack(">i", -1)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            conn.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", _read(conn, 4))[0]
            correlation, brokers = struct.unpack(">ii", _read(conn, 8)) if size >= 8 else (0, 0)
    except (OSError, struct.error):
        return False
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
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def start_clusters(
    specs: Sequence[ClusterSpec], base_dir: Path, timeout: float = 90.0
) -> list[Cluster]:
    """Format and start every cluster concurrently; wait until each answers metadata requests.

    Data dirs are ``base_dir/NAME``; a dir formatted before keeps its cluster id and data.
    Raises LocalKafkaError (after stopping whatever it started) if Java is missing, a port is
    taken, or a broker is not ready within ``timeout`` seconds (the message has its log tail).
    """
    java = check_java()
    libs = ensure_jars()
    _check_ports(specs)
    data_dirs = [base_dir.resolve() / spec.name for spec in specs]
    _format(java, libs, specs, data_dirs)
    started: list[Cluster] = []
    try:
        for spec, data_dir in zip(specs, data_dirs, strict=True):
            started.append(_start_one(java, libs, spec, data_dir))
        deadline = time.monotonic() + timeout
        for cluster in started:
            _wait_ready(cluster, deadline, timeout)
    except BaseException:
        stop_clusters(started)
        raise
    return started


def _format(java: str, libs: Path, specs: Sequence[ClusterSpec], data_dirs: list[Path]) -> None:
    """Write each server.properties and format the data dirs, all at once."""
    running: list[tuple[ClusterSpec, subprocess.Popen[str]]] = []
    for spec, data_dir in zip(specs, data_dirs, strict=True):
        data_dir.mkdir(parents=True, exist_ok=True)
        config = data_dir / "server.properties"
        config.write_text(broker_properties(spec, data_dir))
        command = [
            java, *TOOL_FLAGS, f"-Dlog4j2.configurationFile={LOG4J_CONFIG}", "-cp", f"{libs}/*",
            "kafka.tools.StorageTool", "format", f"--cluster-id={_cluster_id(data_dir)}",
            "-c", str(config), "--ignore-formatted", *spec.format_args,
        ]  # fmt: skip
        running.append((spec, subprocess.Popen(command, stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True)))  # fmt: skip
    failures = []
    for spec, process in running:
        output, _ = process.communicate()
        if process.returncode != 0:
            failures.append(f"cluster {spec.name}: formatting its data dir failed:\n{output}")
    if failures:
        raise LocalKafkaError("\n".join(failures))


def _start_one(java: str, libs: Path, spec: ClusterSpec, data_dir: Path) -> Cluster:
    log_path = data_dir / "broker.log"
    config = data_dir / "server.properties"
    with log_path.open("ab") as log:
        log.write(f"--- localkafka: starting {spec.name} at {time.ctime()}\n".encode())
        log.flush()
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
                f"broker {cluster.spec.name} exited during start-up; "
                f"last lines of {cluster.log_path}:\n{_tail(cluster.log_path)}"
            )
        if time.monotonic() > deadline:
            raise LocalKafkaError(
                f"broker {cluster.spec.name} ({cluster.bootstrap}) not ready after "
                f"{timeout:.0f} s; last lines of {cluster.log_path}:\n{_tail(cluster.log_path)}"
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
    """Tell whether ``pid`` is still a Kafka broker (and not a reused pid)."""
    try:
        return b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False


def stop_clusters(clusters: Sequence[Cluster], timeout: float = 30.0) -> None:
    """SIGTERM each broker by pid, wait, SIGKILL after ``timeout``; skip pids no longer brokers."""
    targets = [c.pid for c in clusters if _alive(c.pid) and _is_broker(c.pid)]
    for pid in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in targets:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            _signal(pid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < kill_deadline:
                time.sleep(0.05)


def broker_pid(cluster: Cluster) -> int | None:
    """Return the process id of ``cluster``'s broker while it runs; None once it has stopped."""
    return cluster.pid if _alive(cluster.pid) and _is_broker(cluster.pid) else None


def stop_cluster(cluster: Cluster, timeout: float = 30.0) -> None:
    """Stop one broker (SIGTERM, SIGKILL after ``timeout``), keeping its data dir and ports."""
    stop_clusters([cluster], timeout)


def restart_cluster(cluster: Cluster, timeout: float = 90.0) -> Cluster:
    """Start a stopped cluster again on its own data dir and ports; wait until it answers.

    Returns the cluster with its new broker pid (topics, offsets and groups are as they were left).
    Raises LocalKafkaError if its broker still runs, a port is taken, or it is not ready within
    ``timeout`` seconds (after stopping what it started; the message has the log tail).
    """
    running = broker_pid(cluster)
    if running is not None:
        raise LocalKafkaError(
            f"broker {cluster.spec.name} still runs (pid {running}); stop it first"
        )
    java = check_java()
    libs = ensure_jars()
    _check_ports([cluster.spec])
    restarted = _start_one(java, libs, cluster.spec, cluster.data_dir)
    try:
        _wait_ready(restarted, time.monotonic() + timeout, timeout)
    except BaseException:
        stop_clusters([restarted])
        raise
    return restarted


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """SIGTERM every process we started (by its Popen), wait, SIGKILL any still running after."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def _signal(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _state_file(directory: Path) -> Path:
    return directory / "state.json"


def _save_state(directory: Path, clusters: Sequence[Cluster]) -> None:
    entries = [
        {"name": c.spec.name, "bootstrap": c.bootstrap, "pid": c.pid, "spec": asdict(c.spec),
         "data_dir": str(c.data_dir), "log_path": str(c.log_path)}
        for c in clusters
    ]  # fmt: skip
    _state_file(directory).write_text(json.dumps(entries, indent=2) + "\n")


def _load_state(directory: Path) -> list[Cluster]:
    try:
        entries = json.loads(_state_file(directory).read_text())
    except OSError as error:
        raise LocalKafkaError(f"no clusters recorded in {directory} ({error.strerror})") from error
    return [
        Cluster(ClusterSpec(**e["spec"]), Path(e["data_dir"]), Path(e["log_path"]), e["pid"])
        for e in entries
    ]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Local single-node Kafka clusters on loopback.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("jars", help="fetch the pinned Kafka jars (if missing); print their folder")
    up = commands.add_parser("up", help="start clusters and leave them running")
    up.add_argument("--names", default="province,city,county", help="comma-separated")
    up.add_argument("--base-port", type=int, default=19092, help="cluster i: base + 1000*i")
    up.add_argument("--heap-mb", type=int, default=512)
    up.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for readiness")
    status = commands.add_parser("status", help="tell whether each recorded broker answers")
    stop = commands.add_parser("stop", help="stop one recorded cluster, keeping its data and ports")
    start = commands.add_parser("start", help="start one stopped cluster again")
    for command in (stop, start):
        command.add_argument("name", help="cluster name, as given to up --names")
        command.add_argument("--timeout", type=float, default=90.0, help="seconds to wait")
    down = commands.add_parser("down", help="stop the recorded brokers")
    for command in (up, status, stop, start, down):
        command.add_argument("--dir", type=Path, default=Path(".local/kafka"))
    return parser


def _up(directory: Path, names: str, base_port: int, heap_mb: int, timeout: float) -> int:
    specs = [
        ClusterSpec(name, base_port + 1000 * i, base_port + 1000 * i + 1, heap_mb=heap_mb)
        for i, name in enumerate(n.strip() for n in names.split(","))
    ]
    if _state_file(directory).exists() and any(
        _alive(c.pid) and _is_broker(c.pid) for c in _load_state(directory)
    ):
        raise LocalKafkaError(f"brokers recorded in {directory} are still running; `down` first")
    clusters = start_clusters(specs, directory, timeout)
    _save_state(directory, clusters)
    for cluster in clusters:
        print(f"{cluster.spec.name} {cluster.bootstrap}")
    return 0


def _status(directory: Path) -> int:
    healthy = True
    for cluster in _load_state(directory):
        alive = _alive(cluster.pid) and _is_broker(cluster.pid)
        ready = alive and metadata_ready(cluster.spec.host, cluster.spec.port)
        healthy &= ready
        state = "ready" if ready else "NOT ANSWERING" if alive else "DOWN"
        print(f"{cluster.spec.name} {cluster.bootstrap} pid {cluster.pid} {state}")
    return 0 if healthy else 1


def _stop_or_start(directory: Path, name: str, start: bool, timeout: float) -> int:
    """Stop or restart the recorded cluster ``name``; record its new pid."""
    clusters = _load_state(directory)
    index = next((i for i, c in enumerate(clusters) if c.spec.name == name), None)
    if index is None:
        known = ", ".join(c.spec.name for c in clusters)
        raise LocalKafkaError(f"no cluster {name!r} recorded in {directory} (known: {known})")
    cluster = clusters[index]
    if start:
        clusters[index] = restart_cluster(cluster, timeout)
        print(f"{name} {cluster.bootstrap} pid {clusters[index].pid} ready")
    else:
        stop_cluster(cluster, timeout)
        print(f"{name} {cluster.bootstrap} stopped; data kept in {cluster.data_dir}")
    _save_state(directory, clusters)
    return 0


def _down(directory: Path) -> int:
    clusters = _load_state(directory)
    for cluster in clusters:
        if not (_alive(cluster.pid) and _is_broker(cluster.pid)):
            print(f"{cluster.spec.name}: pid {cluster.pid} is not a running broker; left alone")
    stop_clusters(clusters)
    _state_file(directory).unlink()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "jars":
            print(ensure_jars())
            return 0
        if args.command == "up":
            return _up(args.dir, args.names, args.base_port, args.heap_mb, args.timeout)
        if args.command == "status":
            return _status(args.dir)
        if args.command in ("stop", "start"):
            return _stop_or_start(args.dir, args.name, args.command == "start", args.timeout)
        return _down(args.dir)
    except LocalKafkaError as error:
        print(f"localkafka: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
