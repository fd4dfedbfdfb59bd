"""Chain data: block heads and gas from the RPC pools; whale transfers found in new blocks
(`whales`, `follower`, `transfers`, `bitcoin_whales`, `whale_apis`), explorer statistics
(`explorers`), DEX analytics and stored TVL (`dex`), all started through `onchain`.

Owns the per-chain answers built from the providers' RPC and explorer pools. Must never
import the API layer (`gateway.api`, `gateway.schema`) or the supervisor.
"""
