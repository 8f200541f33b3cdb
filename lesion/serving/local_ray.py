"""A local Ray instance that listens on the loopback interface only (``lesion serve``, ``--engine ray``).

By default a local ``ray.init()`` binds its processes (GCS, raylet, workers, the dashboard agent and its metrics
export, the runtime-env agent) to the machine's network address or to every interface, and Ray Serve binds each
replica's gRPC server to ``[::]``. Started through :func:`init_local_ray`, every one of them listens on 127.0.0.1:

* the node's address is 127.0.0.1 (``_node_ip_address``; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray from
  replacing a loopback address by the machine's, ``ray._private.services.resolve_ip_for_localhost``);
* no dashboard (``include_dashboard=False``), no metrics collection or export
  (``RAY_enable_metrics_collection=0``), no usage reports (``RAY_USAGE_STATS_ENABLED=0``);
* a Serve replica calls :func:`keep_replica_grpc_on_loopback` in its constructor, which runs before Serve
  starts the replica's gRPC server (``ray.serve._private.replica``).

Only the Serve HTTP proxy listens where ``lesion serve --host`` says (127.0.0.1 unless a token is set).
``tests/serving/test_server_trust.py`` reads the listening sockets of every Ray process and fails on any
address that is not loopback, so a Ray upgrade that binds elsewhere is caught.
"""
from __future__ import annotations

import ipaddress
import os
from typing import Any

#: The loopback address every local Ray process listens on.
LOOPBACK = "127.0.0.1"

#: Environment of the processes a local instance starts (inherited by the raylet, GCS, agents and workers).
LOOPBACK_RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # keep 127.0.0.1 as the node's address
    "RAY_enable_metrics_collection": "0",  # no metrics agent, no Prometheus export port
    "RAY_USAGE_STATS_ENABLED": "0",  # nothing reported anywhere
}


def is_loopback(host: str) -> bool:
    """True for 127.x.x.x, ::1, ::ffff:127.x.x.x and ``localhost``."""
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def init_local_ray(num_cpus: int | None = None, **kwargs: Any) -> None:
    """``ray.init`` of a local instance whose processes listen on 127.0.0.1 only (see the module docstring).

    Does nothing when Ray is already initialised in this process.
    """
    import ray

    if ray.is_initialized():
        return
    saved = {k: os.environ.get(k) for k in LOOPBACK_RAY_ENV}
    os.environ.update(LOOPBACK_RAY_ENV)
    constants = _ray_constants()
    cluster = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    if constants is not None and cluster is not None:
        constants.ENABLE_RAY_CLUSTER = False  # read when ray.init resolves the node's address, in this process
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, dashboard_host=LOOPBACK, _node_ip_address=LOOPBACK,
                 log_to_driver=False, ignore_reinit_error=True, **kwargs)
    finally:
        if constants is not None and cluster is not None:
            constants.ENABLE_RAY_CLUSTER = cluster
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _ray_constants() -> Any:
    try:
        from ray._private import ray_constants
    except ImportError:  # pragma: no cover  (another Ray layout: the socket test says what listens)
        return None
    return ray_constants


def keep_replica_grpc_on_loopback() -> None:
    """In a Serve replica on a loopback node: bind the replica's inter-deployment gRPC server to 127.0.0.1
    instead of ``[::]`` (every interface). Call it from the deployment's constructor. Elsewhere a no-op."""
    try:
        import ray
        from ray.serve._private import replica
    except ImportError:  # pragma: no cover
        return
    try:
        node = ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001  (not inside Ray)
        return
    add_port = getattr(replica, "add_port_to_grpc_server", None)
    if add_port is None or getattr(add_port, "lesion_loopback", False) or not is_loopback(node):
        return

    def add_loopback_port(server: Any, address: str) -> int:
        host, _, port = address.rpartition(":")
        if host in ("[::]", "0.0.0.0", "::", ""):
            address = f"{LOOPBACK}:{port}"
        return add_port(server, address)

    add_loopback_port.lesion_loopback = True  # type: ignore[attr-defined]
    replica.add_port_to_grpc_server = add_loopback_port


def listening_addresses(pids: Any) -> list[tuple[str, int, int]]:
    """``(address, port, pid)`` of every listening TCP socket of the processes ``pids`` (psutil, shipped with Ray)."""
    import ray  # noqa: F401  (puts Ray's bundled psutil on the path)
    import psutil

    pids = set(pids)
    out = []
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            out.append((c.laddr.ip, c.laddr.port, c.pid))
    return out
