"""The strawberry types and resolvers of the public schema, one module per area.

`gateway.schema` assembles them into the one served schema; nothing here builds a
`strawberry.Schema` itself. Must never import `gateway.schema` or `gateway.nursery`.
"""
