"""The API: everything a client touches, from the socket to the strawberry resolvers.

Owns the starlette app and its routes (`app`), hypercorn under Trio (`server`, with the
version-pinned patches in `hypercorn_patches` and the connection caps at accept in
`connections`), the WebSocket protocols (`ws`), shared
subscription executions (`shared_subscriptions`), graphql-core made Trio-native
(`graphql_trio`), query limits, HTTP hygiene, access control (`auth`), metrics, the GraphiQL
assets and the schema's parts (`schema/`). It reads the layers below (prices, providers,
chains, storage) through `context.Services`.

Must never be imported by anything below it: the store, the upstream client, the sources,
the prices and providers packages know nothing of GraphQL or HTTP.
"""
