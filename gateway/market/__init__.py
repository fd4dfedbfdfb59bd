"""Market-wide answers: trending coins, the global overview, DeFi protocols and TVL.

Owns how on-demand market answers are kept (`cache`: one fetch per key at a time, never
served past its TTL). Must never import the API layer (`gateway.api`, `gateway.schema`) or
the supervisor.
"""
