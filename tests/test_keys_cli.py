"""`gateway keys` as an operator runs it: create prints a key once, list never shows one,
revoke marks it; bad arguments exit 2 with one line; only hashes reach the database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.store.api_keys import KEY_PATTERN, hash_key

REPO = Path(__file__).resolve().parent.parent
NO_UPSTREAMS = REPO / "tests" / "data" / "no-providers.toml"


def keys(
    *args: str, db: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway", "keys", *args]
    if db is not None:
        command += ["--db", str(db)]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "GATEWAY_PROVIDERS": str(NO_UPSTREAMS), **(env or {})},
        cwd=REPO,
    )


def test_create_list_revoke(tmp_path: Path) -> None:
    db = tmp_path / "keys.db"
    created = keys("create", "--name", "ci bot", "--role", "admin", "--tier", "pro", db=db)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert created.stdout == key + "\n"  # the key alone on stdout, for KEY=$(…)
    assert KEY_PATTERN.fullmatch(key)
    assert key not in created.stderr and "shown once" in created.stderr
    prefix = key[:11]

    listing = keys("list", db=db)
    assert listing.returncode == 0
    header, row = listing.stdout.splitlines()
    assert header.split()[:5] == ["ID", "NAME", "ROLE", "TIER", "PREFIX"]
    assert row.split()[:6] == ["1", "ci", "bot", "admin", "pro", prefix]
    assert row.rstrip().endswith("-")  # not revoked
    as_json = keys("list", "--json", db=db)
    (record,) = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert record["prefix"] == prefix and record["revokedAt"] is None
    for output in (listing.stdout, listing.stderr, as_json.stdout):
        assert key not in output and key[12:] not in output and hash_key(key) not in output

    revoked = keys("revoke", "1", db=db)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    again = keys("revoke", "1", db=db)  # idempotent: the first revocation time stays
    assert again.returncode == 0 and again.stdout == revoked.stdout
    (record,) = [json.loads(line) for line in keys("list", "--json", db=db).stdout.splitlines()]
    assert record["revokedAt"] is not None

    missing = keys("revoke", "99", db=db)
    assert missing.returncode == 1 and "no key with id 99" in missing.stderr

    stored = b"".join(p.read_bytes() for p in tmp_path.glob("keys.db*"))
    assert key.encode() not in stored and hash_key(key).encode() in stored


def test_the_database_comes_from_gateway_db(tmp_path: Path) -> None:
    db = tmp_path / "env.db"
    created = keys(
        "create", "--name", "x", "--role", "viewer", "--tier", "free", env={"GATEWAY_DB": str(db)}
    )
    assert created.returncode == 0 and db.exists()
    assert keys("list", db=db).stdout.count("\n") == 2


def test_each_key_is_different(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "many.db")
    made = set()
    for n in range(3):
        args = ["keys", "create", "--name", f"k{n}", "--role", "viewer", "--tier", "free"]
        assert main([*args, "--db", db]) == 0
        made.add(capsys.readouterr().out.strip())
    assert len(made) == 3 and all(KEY_PATTERN.fullmatch(k) for k in made)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "ACTION"),
        (["create", "--role", "viewer", "--tier", "free"], "--name"),
        (["create", "--name", "x", "--role", "root", "--tier", "free"], "invalid choice"),
        (["create", "--name", "x", "--role", "viewer", "--tier", "gold"], "invalid choice"),
        (["create", "--name", "", "--role", "viewer", "--tier", "free"], "1 to 100"),
        (["create", "--name", "x" * 101, "--role", "viewer", "--tier", "free"], "1 to 100"),
        (["revoke"], "id"),
        (["revoke", "abc"], "not a key id"),
        (["revoke", "0"], "not a key id"),
        (["list", "--nope"], "unrecognized"),
    ],
)
def test_bad_arguments_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = keys(*args, db=tmp_path / "bad.db")
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "bad.db").exists()  # nothing was opened


def test_an_unusable_database_exits_1(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = keys("list", db=blocker / "sub" / "k.db")
    assert result.returncode == 1
    assert "gateway: error:" in result.stderr and "Traceback" not in result.stderr
