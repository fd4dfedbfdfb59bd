"""Chain data: block heads from the RPC pools (and, as they come, gas, explorers and whales).

Owns the per-chain answers built from the providers' RPC and explorer pools. Must never
import the API layer (`gateway.api`, `gateway.schema`) or the supervisor.
"""
