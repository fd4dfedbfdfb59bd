"""Providers as managed resources: the registry, status board, health checks, alerts and keys.

Owns what the gateway knows about each upstream (state, pools, alerts, which API keys are
set) and wires the upstream client's hooks to the store. Must never import the API layer,
`gateway.prices`, `gateway.ingest` or the supervisor, and never log or expose a key.
"""
