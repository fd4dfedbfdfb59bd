"""Backups and restore (gateway/ops/backup.py, `gateway backup|restore`), issue 13 item 5."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from gateway.ops import backup as backup_module
from gateway.ops.backup import back_up, backups, integrity_problem, restore, rotate
from tests.conftest import StartGateway

REPO = Path(__file__).resolve().parents[2]
NO_UPSTREAMS = REPO / "tests" / "data" / "no-providers.toml"


def live_database(path: Path) -> None:
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
    conn.close()


class Writer(threading.Thread):
    """Commits one row per transaction, as fast as it can; `acked` is the last committed id."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.acked = 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        try:
            for n in range(1, 5_000_000):  # bounded
                if self.stop.is_set():
                    return
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO probe VALUES (?, ?)", (n, f"row {n} " + "x" * 200))
                conn.execute("COMMIT")
                self.acked = n
        finally:
            conn.close()


def test_a_backup_under_continuous_writes_restores_every_acknowledged_row(
    tmp_path: Path,
) -> None:
    db = tmp_path / "live.db"
    live_database(db)
    writer = Writer(db)
    writer.start()
    try:
        deadline = time.monotonic() + 20
        while writer.acked < 3000:
            assert time.monotonic() < deadline and writer.is_alive(), "the writer did not run"
            time.sleep(0.01)
        acknowledged = writer.acked  # every row up to here was committed before the backup
        done = back_up(db, tmp_path / "backups")
        during = writer.acked
        time.sleep(0.2)
        assert writer.acked > during, "the backup must not stop the writer"
    finally:
        writer.stop.set()
        writer.join(timeout=10)
    assert not writer.is_alive()
    assert done.path.parent == tmp_path / "backups" and done.bytes > 0
    assert integrity_problem(done.path) is None

    restored = tmp_path / "restored.db"
    assert restore(done.path, restored) is None  # nothing was there before
    conn = sqlite3.connect(restored)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        count, first, last = conn.execute("SELECT count(*), min(id), max(id) FROM probe").fetchone()
    finally:
        conn.close()
    assert first == 1 and count == last  # a consistent prefix: no hole, no torn row
    assert acknowledged <= last <= writer.acked


def test_backups_are_named_by_utc_time_and_rotated(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    live_database(db)
    folder = tmp_path / "b"
    start = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
    for day in range(4):
        back_up(db, folder, now=start + timedelta(days=day))
    again = back_up(db, folder, now=start + timedelta(days=3))  # same second: not overwritten
    assert [p.name for p in backups(folder)][:2] == [
        "gateway-20261201T030000Z.db",
        "gateway-20261202T030000Z.db",
    ]
    assert again.path.name == "gateway-20261204T030000Z-1.db"
    (folder / "notes.txt").write_text("mine")
    removed = rotate(folder, 2)
    assert [p.name for p in removed] == [
        "gateway-20261201T030000Z.db",
        "gateway-20261202T030000Z.db",
        "gateway-20261203T030000Z.db",
    ]
    assert [p.name for p in backups(folder)] == [
        "gateway-20261204T030000Z.db",
        "gateway-20261204T030000Z-1.db",
    ]
    assert (folder / "notes.txt").exists()
    assert not list(folder.glob(".*partial"))


def test_restore_refuses_a_damaged_file_and_keeps_the_old_content(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    live_database(db)
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO probe VALUES (1, 'before')")
    conn.close()
    good = back_up(db, tmp_path / "b").path
    damaged = tmp_path / "damaged.db"
    data = bytearray(good.read_bytes())
    data[len(data) // 2 :] = b"\xff" * (len(data) - len(data) // 2)
    damaged.write_bytes(bytes(data))
    assert integrity_problem(damaged) is not None
    assert integrity_problem(tmp_path / "nothing.db") is not None
    text = tmp_path / "text.db"
    text.write_text("hello")
    assert integrity_problem(text) == f"{text} is not an SQLite database"

    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO probe VALUES (2, 'after the backup')")
    conn.close()
    saved = restore(good, db, now=datetime(2026, 12, 2, tzinfo=UTC))
    assert saved == tmp_path / "g.db.before-restore-20261202T000000Z"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT id FROM probe").fetchall() == [(1,)]
    conn.close()
    with sqlite3.connect(saved) as conn:
        assert conn.execute("SELECT count(*) FROM probe").fetchone() == (2,)
    conn.close()


def test_restore_refuses_a_database_another_program_holds(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    live_database(db)
    good = back_up(db, tmp_path / "b").path
    holder = sqlite3.connect(db, isolation_level=None)  # as a running gateway does
    try:
        holder.execute("SELECT count(*) FROM probe").fetchone()
        with pytest.raises(backup_module.BackupError) as caught:
            restore(good, db)
        assert caught.value.in_use
    finally:
        holder.close()


async def test_the_daily_backup_runs_when_due_and_rotates(
    tmp_path: Path, autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "g.db"
    live_database(db)
    folder = tmp_path / "b"
    for day in range(3):  # three old ones, the newest two days old: a backup is due
        back_up(db, folder, now=datetime.now(UTC) - timedelta(days=4 - day))
    monkeypatch.setattr(backup_module.trio.to_thread, "run_sync", _inline)
    with trio.move_on_after(backup_module.FIRST_DELAY + 5):
        await backup_module.backup_forever(db, folder, keep=2)
    held = backups(folder)
    assert len(held) == 2
    newest = datetime.strptime(held[-1].name, "gateway-%Y%m%dT%H%M%SZ.db").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - newest).total_seconds()) < 60


async def _inline(fn, *args, **_):  # type: ignore[no-untyped-def]
    return fn(*args)


def gateway(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "GATEWAY_PROVIDERS": str(NO_UPSTREAMS)},
        cwd=REPO,
    )


def test_the_commands_back_up_a_running_gateway_and_refuse_to_restore_under_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "g.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", "0", "--db", str(db)],
        cwd=REPO,
        env={**os.environ, "GATEWAY_PROVIDERS": str(NO_UPSTREAMS), "GATEWAY_LOG_FORMAT": "json"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not (db.exists() and Path(f"{db}-wal").exists()):
            assert time.monotonic() < deadline and process.poll() is None, "no server"
            time.sleep(0.1)
        time.sleep(0.5)
        made = gateway("backup", "--to", str(tmp_path / "b"), "--db", str(db))
        assert made.returncode == 0, made.stderr
        (path,) = backups(tmp_path / "b")
        assert made.stdout.startswith(f"backed up {db} to {path} (")
        refused = gateway("restore", str(path), "--db", str(db))
        assert refused.returncode == 2
        assert refused.stderr == (
            f"gateway: error: not restoring: {db} is in use (is a gateway running on it?): "
            "stop it before restoring\n"
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
    done = gateway("restore", str(path), "--db", str(db))
    assert done.returncode == 0, done.stderr
    assert "integrity check ok" in done.stdout
    bad = tmp_path / "bad.db"
    bad.write_text("not a database")
    refused = gateway("restore", str(bad), "--db", str(db))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "fails the integrity check" in refused.stderr
    missing = gateway("backup", "--to", str(tmp_path / "b"), "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 1 and "no database at" in missing.stderr


async def test_a_gateway_with_a_backup_folder_backs_itself_up(
    start_gateway: StartGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backup_module, "FIRST_DELAY", 0.0)
    folder = tmp_path / "backups"
    running = await start_gateway(backup_dir=folder, backup_keep=1)
    with trio.fail_after(10):
        while not backups(folder):
            await trio.sleep(0.05)
    (made,) = backups(folder)
    assert integrity_problem(made) is None
    assert running.services.settings.backup_keep == 1


def test_backup_settings_come_from_the_environment() -> None:
    from gateway.config import settings_from_env
    from gateway.errors import ConfigError

    assert settings_from_env({}).backup_dir is None  # off when unset
    settings = settings_from_env({"GATEWAY_BACKUP_DIR": "/srv/b", "GATEWAY_BACKUP_KEEP": "3"})
    assert (settings.backup_dir, settings.backup_keep) == (Path("/srv/b"), 3)
    with pytest.raises(ConfigError, match="GATEWAY_BACKUP_KEEP"):
        settings_from_env({"GATEWAY_BACKUP_KEEP": "0"})
