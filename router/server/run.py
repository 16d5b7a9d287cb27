"""Start ``hybridgate serve``: build the shared client, check the bind address, run uvicorn.

uvicorn gives the shutdown the issue asks for: on SIGTERM/SIGINT it stops accepting, lets
in-flight requests (streams included) finish for up to ``graceful_s``, then runs the app's
lifespan exit, which closes the client and flushes every ledger row.

``workers > 1`` runs that many processes (uvicorn's supervisor), each with its own client: its
own local model (~1 GB) and batcher. One process is the default because one batcher for every
connection is what makes local batching pay; more workers suit cloud-heavy policies.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
from dataclasses import asdict, dataclass
from typing import Any

from router._errors import PolicyError

GRACEFUL_S = 30.0
"""Seconds in-flight requests get to finish after SIGTERM before connections are closed."""
_CONFIG_ENV = "HYBRIDGATE_SERVE_CONFIG"


@dataclass(frozen=True)
class ServeConfig:
    """Everything ``hybridgate serve`` was asked for (JSON-able: worker processes read it)."""

    policy: str = "default"
    """A bundled policy name or a YAML path (``router._paths.policy_source``)."""
    ledger: str | None = None
    keys: str | None = None
    api_base: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    allow_no_auth: bool = False
    graceful_s: float = GRACEFUL_S
    log_level: str = "warning"
    otlp_endpoint: str | None = None
    """Where to send spans (else the standard ``OTEL_EXPORTER_OTLP_*`` variables, else none)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(
                ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None)
            )
        except OSError:
            return False


def check_bind(config: ServeConfig) -> None:
    """Refuse to expose an unauthenticated gateway (it spends the server's cloud key)."""
    if config.keys is None and not is_loopback(config.host) and not config.allow_no_auth:
        raise PolicyError(
            f"--host {config.host} accepts connections from other machines, and no --keys file "
            "is configured: anyone who can reach it could spend your cloud budget. Pass "
            "--keys FILE, bind to 127.0.0.1, or --allow-no-auth if the network is trusted."
        )
    if config.workers < 1:
        raise PolicyError(f"--workers must be >= 1, got {config.workers}")
    from router.server.tracing import configured_endpoint, require_exporter

    endpoint = configured_endpoint(config.otlp_endpoint)
    if endpoint:
        require_exporter(endpoint)


def build_server(config: ServeConfig) -> Any:
    """The ``GatewayServer`` for ``config`` (one per process)."""
    from router.client import HybridClient
    from router.server.app import GatewayServer
    from router.server.keys import KeyRing
    from router.server.tracing import Tracing, configured_endpoint

    keys = KeyRing.load(config.keys) if config.keys else None
    endpoint = configured_endpoint(config.otlp_endpoint)
    tracing = Tracing.build(endpoint) if endpoint else None  # before the model loads
    client = HybridClient(policy=config.policy, ledger=config.ledger, api_base=config.api_base)
    return GatewayServer(client, keys=keys, tracing=tracing)


def worker_app() -> Any:
    """uvicorn's factory in each worker process (``--workers N``)."""
    config = ServeConfig(**json.loads(os.environ[_CONFIG_ENV]))
    return build_server(config).app


def serve(config: ServeConfig, *, on_ready: Any = None) -> None:
    """Run until SIGTERM/SIGINT. Raises ``PolicyError`` for a bad policy, keys file or bind."""
    import uvicorn

    check_bind(config)
    common: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "log_level": config.log_level,
        "timeout_graceful_shutdown": config.graceful_s,
        # longer than clients keep idle connections (httpx: 5 s), so the client closes first and
        # never sends on a connection the server is closing (a ReadError under load)
        "timeout_keep_alive": 75,
        "access_log": False,
    }
    if config.workers > 1:
        os.environ[_CONFIG_ENV] = json.dumps(asdict(config))
        uvicorn.run("router.server.run:worker_app", factory=True, workers=config.workers, **common)
        return
    server = build_server(config)  # policy and keys errors surface before the port is bound
    if on_ready is not None:
        on_ready(server)
    uvicorn.run(server.app, **common)


__all__ = ["GRACEFUL_S", "ServeConfig", "build_server", "check_bind", "is_loopback", "serve"]
