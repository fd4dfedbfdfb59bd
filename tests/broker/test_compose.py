"""docker-compose.yml's `scale` profile and its nginx config (README "Running several
replicas"): Redis, PostgreSQL, two replicas on the broker and the database, and a
WebSocket-aware load balancer in front of them; the single-process service is unchanged."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import yaml

from tests.services import missing_service

REPO = Path(__file__).resolve().parents[2]


def test_the_scale_profile_runs_two_replicas_behind_a_websocket_aware_balancer() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert "profiles" not in services["gateway"]  # `docker compose up` is one process still
    for name in ("redis", "postgres", "replica-1", "replica-2", "lb"):
        assert services[name]["profiles"] == ["scale"], name
    for name in ("replica-1", "replica-2"):
        env = services[name]["environment"]
        assert env["GATEWAY_BROKER"].startswith("redis://redis:")
        assert env["GATEWAY_DB"].startswith("postgresql://") and "@postgres:" in env["GATEWAY_DB"]
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
    mount = services["lb"]["volumes"][0].split(":")[0]
    conf = (REPO / mount).read_text()
    assert "replica-1:7860" in conf and "replica-2:7860" in conf
    assert "proxy_set_header Upgrade $http_upgrade" in conf  # WebSockets pass through
    assert "proxy_http_version 1.1" in conf


def test_the_nginx_config_is_valid(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        missing_service("nginx is not installed (Debian package nginx-light)")
    conf = (REPO / "deploy" / "nginx-replicas.conf").read_text()
    conf = conf.replace("replica-1:", "127.0.0.1:").replace("replica-2:", "127.0.0.2:")
    with socket.socket() as probe:  # nginx -t checks the port (0 is refused): a free one
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\n{conf}\n}}\n"
    )
    result = subprocess.run(
        [nginx, "-t", "-q", "-c", str(main), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
