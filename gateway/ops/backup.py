"""Backups of the database: online copies, rotation, and a checked restore.

`back_up(db, folder)` copies the database with SQLite's online backup API
(`sqlite3.Connection.backup`) from a read-only connection of its own, in one step: the copy is
the database as of one read transaction, so a server writing at the same time (WAL) is neither
blocked nor able to leave a half-written copy, and every transaction committed before the
backup began is in it. The copy is written under a temporary name, switched out of WAL (one
self-contained file), checked (`PRAGMA quick_check`) and only then renamed to
`gateway-YYYYMMDDTHHMMSSZ.db` (UTC), so a file with that name is always a whole backup.

`rotate(folder, keep)` deletes all but the newest `keep` of those files; `backup_forever` is
the supervised daily task (`GATEWAY_BACKUP_DIR`, `GATEWAY_BACKUP_KEEP`).

`restore(file, db)` runs `PRAGMA integrity_check` on the file first, refuses (`BackupError`,
`in_use=True`) when something holds the target open (a running gateway keeps connections to
its WAL database, so SQLite will not take it out of WAL mode: that is the test), saves the
target's current content beside it (`<db>.before-restore-<time>`) and then copies the file
into it with the same backup API, under SQLite's own locks.

Must never: write into a database a running server holds, leave a partial file under a backup
name, or delete anything but this module's own `gateway-*.db` files.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog
import trio

__all__ = [
    "BACKUP_EVERY",
    "BackupError",
    "BackupResult",
    "back_up",
    "backup_forever",
    "backups",
    "integrity_problem",
    "restore",
    "rotate",
]

log = structlog.get_logger(__name__)

BACKUP_EVERY = timedelta(days=1)
PREFIX = "gateway-"
STAMP = "%Y%m%dT%H%M%SZ"
FIRST_DELAY = 60.0  # seconds after start-up before a due backup is taken
RETRY_AFTER = 3600.0  # seconds before a failed scheduled backup is tried again


class BackupError(Exception):
    """A backup or restore that could not be done; the message says why, in one line.
    `in_use`: the target database is held by another program (a running gateway)."""

    def __init__(self, message: str, *, in_use: bool = False) -> None:
        super().__init__(message)
        self.in_use = in_use


@dataclass(frozen=True)
class BackupResult:
    path: Path
    bytes: int
    seconds: float


def backups(folder: Path) -> list[Path]:
    """This module's backup files in `folder`, oldest first (the names sort by time)."""
    if not folder.is_dir():
        return []
    found = [(stamp, p) for p in folder.glob(f"{PREFIX}*.db") if (stamp := _stamp(p)) is not None]
    # By time, then "-1", "-2" after the plain name (same second); not by bare name, where
    # "-1.db" would sort before ".db".
    return [p for _, p in sorted(found, key=lambda found: (found[0], len(found[1].name), found[1]))]


def _stamp(path: Path) -> datetime | None:
    text = path.name.removeprefix(PREFIX).removesuffix(".db").split("-", 1)[0]
    try:
        return datetime.strptime(text, STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def _read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise BackupError(f"no database at {path}")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {path}: {exc}") from exc


def back_up(db: Path, folder: Path, *, now: datetime | None = None) -> BackupResult:
    """Copy `db` into `folder` as `gateway-<UTC time>.db` (see the module docstring)."""
    started = time.monotonic()
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot create backup folder {folder}: {exc.strerror}") from exc
    target = folder / f"{PREFIX}{moment:{STAMP}}.db"
    n = 1
    while target.exists():  # two backups within one second
        target = folder / f"{PREFIX}{moment:{STAMP}}-{n}.db"
        n += 1
    partial = folder / f".{target.name}.partial"
    source = _read_only(db)
    try:
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(copy)  # pages=-1: all at once, one consistent snapshot
            copy.execute("PRAGMA journal_mode=DELETE")
            problem = _check(copy, "quick_check")
        finally:
            copy.close()
        if problem is not None:
            raise BackupError(f"the copy of {db} fails its check: {problem}")
        os.replace(partial, target)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {db} to {folder}: {exc}") from exc
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        source.close()
        partial.unlink(missing_ok=True)
    return BackupResult(target, target.stat().st_size, time.monotonic() - started)


def rotate(folder: Path, keep: int) -> list[Path]:
    """Delete all but the newest `keep` backups in `folder`; the paths deleted."""
    old = backups(folder)[:-keep] if keep > 0 else []
    for path in old:
        path.unlink(missing_ok=True)
    return old


def _check(conn: sqlite3.Connection, pragma: str) -> str | None:
    rows = [str(row[0]) for row in conn.execute(f"PRAGMA {pragma}").fetchall()]
    return None if rows == ["ok"] else "; ".join(rows[:3]) or "no answer"


def integrity_problem(path: Path) -> str | None:
    """None if `path` is an SQLite database that passes `PRAGMA integrity_check`, else why."""
    if not path.is_file():
        return f"{path} does not exist"
    with open(path, "rb") as head:
        if head.read(16) != b"SQLite format 3\x00":
            return f"{path} is not an SQLite database"
    try:
        conn = _read_only(path)
        try:
            return _check(conn, "integrity_check")
        finally:
            conn.close()
    except (sqlite3.Error, BackupError) as exc:
        return str(exc)


def restore(file: Path, db: Path, *, now: datetime | None = None) -> Path | None:
    """Replace the content of `db` with the backup `file`; the safety copy of what `db` held
    (None if there was no `db`). Raises BackupError, with `in_use` when a program holds `db`."""
    problem = integrity_problem(file)
    if problem is not None:
        raise BackupError(f"{file} fails the integrity check: {problem}")
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    saved: Path | None = None
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(db, isolation_level=None, timeout=0)
    except (OSError, sqlite3.Error) as exc:
        raise BackupError(f"cannot open {db}: {exc}") from exc
    try:
        try:
            # A gateway keeps connections open to its WAL database; SQLite then refuses to take
            # it out of WAL ("database is locked"): the sign that a server holds it.
            mode = target.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        except sqlite3.OperationalError as exc:
            mode = str(exc)
        if mode != "delete":
            raise BackupError(
                f"{db} is in use (is a gateway running on it?): stop it before restoring",
                in_use=True,
            )
        target.execute("PRAGMA locking_mode=EXCLUSIVE")  # held until we are done
        if target.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            saved = db.with_name(f"{db.name}.before-restore-{moment:{STAMP}}")
            safety = sqlite3.connect(saved)
            try:
                target.backup(safety)
            finally:
                safety.close()
        source = _read_only(file)
        try:
            source.backup(target)
        finally:
            source.close()
        problem = _check(target, "integrity_check")
        if problem is not None:
            raise BackupError(f"{db} fails the integrity check after the restore: {problem}")
    except sqlite3.Error as exc:
        raise BackupError(f"cannot restore {file} into {db}: {exc}") from exc
    finally:
        target.close()
    return saved


async def backup_forever(db: Path, folder: Path, keep: int) -> None:
    """The daily backup: one is taken when the newest in `folder` is a day old (or there is
    none), a minute after start-up at the earliest, then rotated to `keep`. A failure is logged
    and tried again in an hour; it never ends the task."""
    await trio.sleep(FIRST_DELAY)
    while True:
        held = backups(folder)
        newest = _stamp(held[-1]) if held else None
        due = newest + BACKUP_EVERY if newest is not None else datetime.now(UTC)
        wait = (due - datetime.now(UTC)).total_seconds()
        if wait > 0:
            await trio.sleep(wait)
            continue
        try:
            # Abandoned on shutdown: the copy goes on under its temporary name and is then
            # renamed or removed by the thread itself; shutdown does not wait for a big file.
            done = await trio.to_thread.run_sync(back_up, db, folder, abandon_on_cancel=True)
        except BackupError as exc:
            log.error("backup.failed", error=str(exc), retry_in_seconds=RETRY_AFTER)
            await trio.sleep(RETRY_AFTER)
            continue
        deleted = await trio.to_thread.run_sync(rotate, folder, keep)
        log.info(
            "backup.done",
            path=str(done.path),
            bytes=done.bytes,
            seconds=round(done.seconds, 3),
            rotated=[p.name for p in deleted],
        )
