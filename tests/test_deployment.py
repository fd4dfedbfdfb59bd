"""The deployment files (issue 13 item 8): the Dockerfile passes hadolint and caches its
dependency layer apart from the code; requirements.lock pins every runtime dependency;
docker-compose.yml has the data volume, env file and health check. No Docker daemon is needed
(none runs on the development machines): these read the files."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = (REPO / "Dockerfile").read_text()


def locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.-]+)==(\S+)$", line):
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint is in the test extra: pip install -e '.[test]'"
    done = subprocess.run(
        [str(hadolint), "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dependency_layer_comes_before_the_code() -> None:
    lock = DOCKERFILE.index("COPY requirements.lock")
    install = DOCKERFILE.index("--requirement requirements.lock")
    code = DOCKERFILE.index("COPY gateway ./gateway")
    assert lock < install < code
    assert "pip install --no-deps ." in DOCKERFILE[code:]


def test_the_lock_pins_every_runtime_dependency() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pins = locked()
    torch = None
    for text in project["dependencies"]:
        wanted = Requirement(text)
        name = wanted.name.lower().replace("_", "-")
        if name == "torch":  # installed apart, as the CPU build, at the pyproject's pin
            torch = wanted
            continue
        assert name in pins, f"{name} is not in requirements.lock: run deploy/lock.sh"
        assert pins[name] in wanted.specifier, f"{name}=={pins[name]} does not satisfy {text}"
    assert torch is not None and f'"torch{torch.specifier}"' in DOCKERFILE
    assert not [n for n in pins if n == "torch" or n == "triton" or n.startswith("nvidia-")]


def test_compose_has_the_volume_env_file_and_health_check() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    gateway = compose["services"]["gateway"]
    assert "gateway-data:/data" in gateway["volumes"] and "gateway-data" in compose["volumes"]
    assert gateway["env_file"][0]["path"] == ".env"
    assert gateway["environment"]["GATEWAY_DB"].startswith("/data/")
    assert gateway["environment"]["GATEWAY_BACKUP_DIR"].startswith("/data/")
    assert "/healthz" in " ".join(gateway["healthcheck"]["test"])
    assert gateway["ports"] == ["127.0.0.1:7860:7860"] and "EXPOSE 7860" in DOCKERFILE
