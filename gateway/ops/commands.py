"""`gateway backup` and `gateway restore`: the commands around gateway/ops/backup.py.

Each prints one line on success (stdout) or one error line (stderr) and returns the exit code:
backup 0 done, 1 failed (no database, unwritable folder); restore 0 done, 2 refused (the file
fails its integrity check, or a running gateway holds the database), 1 failed otherwise.

Must never print a traceback for a condition the operator can cause.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gateway.ops.backup import BackupError, back_up, integrity_problem, restore, rotate

__all__ = ["backup_command", "restore_command"]


def _fail(code: int, message: str) -> int:
    print(f"gateway: error: {message}", file=sys.stderr)
    return code


def backup_command(db: Path, folder: Path, keep: int | None) -> int:
    """Copy `db` into `folder` now; with `keep`, rotate to the newest `keep` afterwards."""
    try:
        done = back_up(db, folder)
        deleted = rotate(folder, keep) if keep else []
    except BackupError as exc:
        return _fail(1, str(exc))
    rotated = f"; removed {len(deleted)} older" if deleted else ""
    print(f"backed up {db} to {done.path} ({done.bytes} bytes in {done.seconds:.2f} s{rotated})")
    return 0


def restore_command(file: Path, db: Path) -> int:
    """Check `file`, then copy it into `db` unless a running gateway holds `db`."""
    problem = integrity_problem(file)
    if problem is not None:
        return _fail(2, f"not restoring: {file} fails the integrity check: {problem}")
    try:
        saved = restore(file, db)
    except BackupError as exc:
        return _fail(2 if exc.in_use else 1, f"not restoring: {exc}")
    kept = f"; what {db} held before is kept in {saved}" if saved else ""
    print(f"restored {file} into {db} (integrity check ok){kept}")
    return 0
