"""Operations: what an operator runs around the gateway rather than through its API.

`ports` checks that the HTTP port can be bound before anything else starts; `backup` copies
the database with SQLite's online backup API (by hand, `gateway backup`, or daily with
rotation) and restores a copy after checking it; `doctor` checks configuration, keys, the
database, each provider and the sentiment model, and prints a table.

Its layer is just below the supervisor (which starts the daily backup) and the CLI: it may
import the domain packages (news, for the sentiment model), providers, storage, upstream and
config; it must never import api, schema, nursery or ingest, and nothing below may import it.
"""
