"""schema.graphql, committed at the repository root, is exactly what `gateway schema` prints.

The file is how readers and client generators see the API without running the gateway, so a
change to the served schema must regenerate it in the same commit.
"""

from __future__ import annotations

import difflib
import io
from contextlib import redirect_stdout
from pathlib import Path

from gateway.cli import main

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def test_schema_file_matches_what_the_gateway_serves() -> None:
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main(["schema"]) == 0
    current = printed.getvalue()
    committed = SCHEMA_FILE.read_text() if SCHEMA_FILE.exists() else ""
    if committed != current:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                current.splitlines(keepends=True),
                "schema.graphql (committed)",
                "gateway schema (now)",
                n=1,
            )
        )
        raise AssertionError(
            "schema.graphql is not what the gateway serves; run "
            f"`gateway schema > schema.graphql` and commit it.\n{diff[:4000]}"
        )
