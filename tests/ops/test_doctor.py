"""`gateway doctor` (gateway/ops/doctor.py), issue 13 item 7: against the upstream simulator,
with `--offline`, and with no upstream reachable."""

from __future__ import annotations

import os
import socket
import sqlite3
import sys
from pathlib import Path

import trio

from tests.simulator.rest import Fault, run_simulator

REPO = Path(__file__).resolve().parents[2]
KEYED = (
    '[[provider]]\nid = "etherscan"\ncategory = "ONCHAIN"\nbase_url = "http://127.0.0.1:9/api"\n'
    'auth = {{ kind = "query", name = "apikey", env = "GATEWAY_DOCTOR_TEST_KEY" }}\n'
    'health = {{ path = "/ping" }}\n'
)
ENTRY = (
    '[[provider]]\nid = "{id}"\ncategory = "MARKET_DATA"\nbase_url = "{url}"\n'
    'timeout_seconds = 1\nhealth = {{ path = "/ping" }}\n'
)


def providers(path: Path, urls: dict[str, str]) -> Path:
    path.write_text("".join(ENTRY.format(id=i, url=u) for i, u in urls.items()) + KEYED.format())
    return path


async def doctor(tmp_path: Path, providers_file: Path, *args: str) -> tuple[int, list[str]]:
    quiet = tmp_path / "quiet.env"
    quiet.write_text("")
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "gateway", "doctor", "--providers", str(providers_file), *args],
            cwd=REPO,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env={
                **os.environ,
                "GATEWAY_DB": str(tmp_path / "g.db"),
                "GATEWAY_ENV_FILE": str(quiet),
                "GATEWAY_SENTIMENT_MODEL": "off",
                "GATEWAY_LOG_FORMAT": "json",
            },
        )
    return done.returncode, done.stdout.decode().splitlines()


def row(lines: list[str], name: str) -> list[str]:
    (found,) = [line.split(None, 2) for line in lines if line.split(None, 1)[:1] == [name]]
    return found


async def test_doctor_asks_each_provider_once_and_prints_a_table(tmp_path: Path) -> None:
    async with run_simulator() as sim:
        file = providers(
            tmp_path / "p.toml",
            {"coingecko": sim.base_url("coingecko"), "binance": sim.base_url("binance")},
        )
        sim.inject("binance", Fault.status(500))
        code, lines = await doctor(tmp_path, file)
    assert code == 0, lines
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert row(lines, "configuration")[1] == "ok"
    assert row(lines, "provider/coingecko")[1:] and row(lines, "provider/coingecko")[1] == "ok"
    assert (
        row(lines, "provider/binance")[1] == "warn" and "500" in row(lines, "provider/binance")[2]
    )
    assert row(lines, "keys")[1:] == ["warn", "0 set, 1 missing"]
    assert row(lines, "key/etherscan")[1:] == [
        "warn",
        "GATEWAY_DOCTOR_TEST_KEY is not set: etherscan is never called",
    ]
    assert row(lines, "database")[1] == "ok" and "not created yet" in row(lines, "database")[2]
    assert row(lines, "sentiment")[1] == "skip"
    assert lines[-1] == "doctor: ready, with 2 warnings"
    pings = [path for provider, path, _, _ in sim.requests if path.endswith("/ping")]
    assert len(pings) >= 2  # one per provider (the client may retry a 500)


async def test_doctor_offline_sends_nothing_and_checks_the_database(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE t (a)")
    conn.close()
    async with run_simulator() as sim:
        file = providers(tmp_path / "p.toml", {"coingecko": sim.base_url("coingecko")})
        code, lines = await doctor(tmp_path, file, "--offline")
        assert sim.requests == []
    assert code == 0, lines
    assert row(lines, "provider/coingecko")[1:] == ["skip", "--offline"]
    assert row(lines, "database")[1] == "ok" and "integrity check ok" in row(lines, "database")[2]
    assert lines[-1] == "doctor: ready, with 1 warning (offline: no provider was asked)"

    data = bytearray(db.read_bytes())
    data[100:] = b"\xee" * (len(data) - 100)
    db.write_bytes(bytes(data))
    code, lines = await doctor(tmp_path, file, "--offline")
    assert code == 1 and row(lines, "database")[1] == "CRITICAL"
    assert lines[-1] == "doctor: critical: database"


async def test_doctor_says_plainly_when_no_upstream_is_reachable(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    file = providers(tmp_path / "p.toml", {"coingecko": closed, "binance": closed})
    code, lines = await doctor(tmp_path, file)
    assert code == 1
    assert row(lines, "upstream")[1] == "CRITICAL"
    assert (
        lines[-1] == "doctor: no upstream is reachable: check the network, DNS, proxy or firewall"
    )


async def test_doctor_with_a_bad_providers_file_exits_2(tmp_path: Path) -> None:
    file = tmp_path / "p.toml"
    file.write_text("# nothing\n")
    code, lines = await doctor(tmp_path, file, "--offline")
    assert code == 2 and lines[-1].startswith("doctor: bad configuration:")
