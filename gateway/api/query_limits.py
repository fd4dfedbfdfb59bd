"""Query limits: how much one GraphQL request may ask of the gateway, decided before it runs.

Every check here is a pure function of the query text or of the parsed document (plus the
schema and the request's variables for the cost), so HTTP and both WebSocket protocols share
them through `GraphQLEngine.prepare`, and a rejected request never reaches a resolver.

    check_size       the query text, in UTF-8 bytes, before it is parsed
    check_document   depth, aliases, introspection and overlapping fields: they depend only on
                     the document, so the engine caches the verdict with the parsed document
    check_cost       the estimated cost: it depends on the variables, so it is checked per
                     request (one linear walk of the selected operation)

Depth: a field is one level deeper than the field it is selected in (top-level fields are at
depth 1); fragments are expanded and add no level of their own. `{ status { version } }` has
depth 2.

Cost, an estimate of how many values a response can hold:

    cost(selection set) = Σ cost(field), over every field selected, fragments expanded
    cost(field)         = 1 + multiplier(field) * cost(the field's own selection set)
    multiplier(field)   = 1 for a field whose type is not a list; for a list field, the value of
                          its `first`, `last` or `limit` argument (a literal, or a variable's
                          value from the request, or the variable's default), else that
                          argument's default in the schema, else `default_list_size`

so `{ ohlcv(symbol: "BTC", interval: H1, limit: 50) { open close } }` costs 1 + 50 * 2 = 101.
Nested list types (`[[T]]`) count once per field, and the branches of a field's inline
fragments and fragment spreads are added up (an upper bound when they are exclusive).

Overlapping fields: validation (graphql-core's OverlappingFieldsCanBeMerged) compares every
pair of same-named fields, and every pair of fragment spreads, within one selection set, so a
few kilobytes of `status { version } status { version } …` or of fragment spreads keep the
event loop busy for seconds. The pairs are counted (linear time) and bounded before validation.

Every violation is a GraphQLError with `extensions.code` QUERY_TOO_COMPLEX (size, depth,
aliases, overlapping fields, cost) or BAD_USER_INPUT (introspection while it is disabled), and
`extensions.limit`, `extensions.maximum` and `extensions.actual` saying which limit and by how
much.

Must never: recurse over a document (a chain of a thousand fragments must not exhaust the
stack), loop on a fragment cycle, or take more than time linear in the document to decide.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLArgument,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
)
from graphql.type import SchemaMetaFieldDef, TypeMetaFieldDef, TypeNameMetaFieldDef

if TYPE_CHECKING:
    from gateway.config import Settings

__all__ = [
    "BAD_USER_INPUT",
    "DEFAULT_LIST_SIZE",
    "QUERY_TOO_COMPLEX",
    "SIZE_ARGUMENTS",
    "QueryLimits",
    "check_cost",
    "check_document",
    "check_query",
    "check_size",
    "count_aliases",
    "count_overlap_pairs",
    "estimate_cost",
    "measure_depth",
    "uses_introspection",
    "utf8_length",
]

QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
BAD_USER_INPUT = "BAD_USER_INPUT"

# Arguments that bound how many items a list field returns.
SIZE_ARGUMENTS = ("first", "last", "limit")

# A multiplier larger than this is as bad as infinite; capping it keeps the arithmetic small
# when a request passes `first: 99999999999999999999`.
_HUGE = 10**12

# A list field with no size argument is priced as this many items.
DEFAULT_LIST_SIZE = 10

# The overlap count gives up (and the document is rejected) after walking this many fields of
# the merged tree: real documents stay in the hundreds.
_OVERLAP_WALK_FIELDS = 20_000

_INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """What one request may ask; the defaults mirror `gateway.config.Settings`.

    The defaults admit GraphiQL's own introspection query (depth 15, cost 49,432, or 51,863
    with every option on) and the largest data query the schema serves (`ohlcv` with
    `limit: 5000` and all eleven Candle fields: 55,001); they refuse anything nested deeper,
    the second such `ohlcv` in one document, and recursive introspection beyond three levels.
    """

    max_document_bytes: int = 32 * 1024
    max_depth: int = 15
    max_aliases: int = 30
    max_overlap_pairs: int = 1_000
    max_cost: int = 60_000
    default_list_size: int = DEFAULT_LIST_SIZE
    allow_introspection: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> QueryLimits:
        return cls(
            max_document_bytes=settings.query_max_document_bytes,
            max_depth=settings.query_max_depth,
            max_aliases=settings.query_max_aliases,
            max_overlap_pairs=settings.query_max_overlap_pairs,
            max_cost=settings.query_max_cost,
            default_list_size=settings.query_default_list_size,
            allow_introspection=settings.allow_introspection,
        )


def _violation(code: str, limit: str, message: str, maximum: int, actual: int) -> GraphQLError:
    return GraphQLError(
        message,
        extensions={"code": code, "limit": limit, "maximum": maximum, "actual": actual},
    )


def _too_complex(limit: str, message: str, maximum: int, actual: int) -> GraphQLError:
    return _violation(QUERY_TOO_COMPLEX, limit, message, maximum, actual)


# ---------------------------------------------------------------------------------------------
# size


def utf8_length(text: str) -> int:
    """Bytes of `text` in UTF-8, without encoding it when the answer is obvious."""
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def check_size(query: str, limits: QueryLimits) -> GraphQLError | None:
    """The document-size limit, checked on the text before any parsing."""
    maximum = limits.max_document_bytes
    if len(query) > maximum:  # every character is at least one byte
        size = len(query)
    else:
        size = utf8_length(query)
        if size <= maximum:
            return None
    return _too_complex(
        "size", f"the query is {size} bytes; at most {maximum} are accepted", maximum, size
    )


# ---------------------------------------------------------------------------------------------
# walking a document without recursion


def _fragments(document: DocumentNode) -> dict[str, FragmentDefinitionNode]:
    fragments: dict[str, FragmentDefinitionNode] = {}
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            fragments.setdefault(definition.name.value, definition)
    return fragments


def _selection_sets(root: SelectionSetNode | None) -> Iterator[SelectionSetNode]:
    """Every selection set under `root` (fields and inline fragments; not fragment spreads)."""
    stack = [root] if root is not None else []
    while stack:
        selection_set = stack.pop()
        yield selection_set
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode | InlineFragmentNode) and selection.selection_set:
                stack.append(selection.selection_set)


def _spread_names(root: SelectionSetNode | None) -> list[str]:
    return [
        selection.name.value
        for selection_set in _selection_sets(root)
        for selection in selection_set.selections
        if isinstance(selection, FragmentSpreadNode)
    ]


def _dependency_order(fragments: Mapping[str, FragmentDefinitionNode]) -> list[str]:
    """Fragment names, each after every fragment it spreads (a cycle is cut where it closes).

    An iterative depth-first post-order, so neither a long chain of fragments nor a cycle can
    exhaust the stack or loop.
    """
    order: list[str] = []
    seen: set[str] = set()
    for root in fragments:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(_spread_names(fragments[root].selection_set)))]
        while stack:
            name, children = stack[-1]
            for child in children:
                if child in fragments and child not in seen:
                    seen.add(child)
                    stack.append((child, iter(_spread_names(fragments[child].selection_set))))
                    break
            else:
                stack.pop()
                order.append(name)
    return order


def _operations(document: DocumentNode) -> list[OperationDefinitionNode]:
    return [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]


# ---------------------------------------------------------------------------------------------
# depth, aliases, overlapping fields, introspection: the document alone decides


def _depth(root: SelectionSetNode | None, fragment_depths: Mapping[str, int]) -> int:
    deepest = 0
    stack = [(root, 0)] if root is not None else []
    while stack:
        selection_set, level = stack.pop()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                deepest = max(deepest, level + 1)
                if selection.selection_set is not None:
                    stack.append((selection.selection_set, level + 1))
            elif isinstance(selection, InlineFragmentNode):
                stack.append((selection.selection_set, level))
            elif isinstance(selection, FragmentSpreadNode):
                # its fragment's depth was computed first (0 when cyclic or unknown)
                deepest = max(deepest, level + fragment_depths.get(selection.name.value, 0))
    return deepest


def measure_depth(document: DocumentNode) -> int:
    """The deepest field nesting of any operation in the document, fragments expanded."""
    fragments = _fragments(document)
    depths: dict[str, int] = {}
    for name in _dependency_order(fragments):
        depths[name] = _depth(fragments[name].selection_set, depths)
    return max((_depth(op.selection_set, depths) for op in _operations(document)), default=0)


def _fields(document: DocumentNode) -> Iterator[FieldNode]:
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode):
            for selection_set in _selection_sets(definition.selection_set):
                for selection in selection_set.selections:
                    if isinstance(selection, FieldNode):
                        yield selection


def count_aliases(document: DocumentNode) -> int:
    """Aliased fields, as written (a fragment's aliases count once however often it is spread)."""
    return sum(1 for field in _fields(document) if field.alias is not None)


def uses_introspection(document: DocumentNode) -> bool:
    """Whether the document selects `__schema` or `__type` (`__typename` does not count)."""
    return any(field.name.value in _INTROSPECTION_FIELDS for field in _fields(document))


def count_overlap_pairs(document: DocumentNode, *, give_up_above: int | None = None) -> int:
    """Pairs that overlapping-fields validation compares: same-named fields, fragment spreads.

    Validation merges what it compares the way execution does: a selection set with its inline
    fragments and (transitively) the fragments it spreads, and then the sub-selections of every
    field sharing a response name, together. This walks that merged tree from each operation
    and fragment definition and adds, at every merged set, C(n, 2) for each response name used
    n times and C(s, 2) for the s distinct fragments spread there.

    The walk's own work is the merged tree's size, which nested fragments can make exponential,
    so with `give_up_above` it stops as soon as the count passes it or it has visited
    `_OVERLAP_WALK_FIELDS` fields, and then returns a number above `give_up_above`.
    """
    fragments = _fragments(document)
    total = 0
    visited = 0
    groups: list[list[SelectionSetNode]] = [
        [definition.selection_set]
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode | FragmentDefinitionNode)
    ]
    while groups:
        pending = groups.pop()
        by_name: dict[str, list[SelectionSetNode | None]] = {}
        spread: set[str] = set()
        while pending:
            for selection in pending.pop().selections:
                if isinstance(selection, FieldNode):
                    visited += 1
                    key = (selection.alias or selection.name).value
                    by_name.setdefault(key, []).append(selection.selection_set)
                elif isinstance(selection, InlineFragmentNode):
                    pending.append(selection.selection_set)
                elif isinstance(selection, FragmentSpreadNode):
                    name = selection.name.value
                    if name not in spread:  # validation compares a fragment once per set
                        spread.add(name)
                        fragment = fragments.get(name)
                        if fragment is not None:
                            pending.append(fragment.selection_set)
        total += len(spread) * (len(spread) - 1) // 2
        for selection_sets in by_name.values():
            total += len(selection_sets) * (len(selection_sets) - 1) // 2
            merged = [s for s in selection_sets if s is not None]
            if merged:
                groups.append(merged)
        if give_up_above is not None and (total > give_up_above or visited > _OVERLAP_WALK_FIELDS):
            return max(total, give_up_above + 1)
    return total


def check_document(document: DocumentNode, limits: QueryLimits) -> list[GraphQLError]:
    """Depth, aliases, overlapping fields and introspection: cacheable with the document.

    Safe on documents that have not been validated (unknown or cyclic fragments count as
    empty), so it runs before validation and keeps validation's own costs bounded.
    """
    errors: list[GraphQLError] = []
    if not limits.allow_introspection and uses_introspection(document):
        errors.append(
            _violation(
                BAD_USER_INPUT,
                "introspection",
                "introspection (__schema, __type) is disabled on this server",
                0,
                1,
            )
        )
    aliases = count_aliases(document)
    if aliases > limits.max_aliases:
        errors.append(
            _too_complex(
                "aliases",
                f"the query uses {aliases} aliases; at most {limits.max_aliases} are accepted",
                limits.max_aliases,
                aliases,
            )
        )
    pairs = count_overlap_pairs(document, give_up_above=limits.max_overlap_pairs)
    if pairs > limits.max_overlap_pairs:
        errors.append(
            _too_complex(
                "overlap",
                f"the query repeats fields or fragment spreads too often ({pairs} pairs to "
                f"compare; at most {limits.max_overlap_pairs})",
                limits.max_overlap_pairs,
                pairs,
            )
        )
    depth = measure_depth(document)
    if depth > limits.max_depth:
        errors.append(
            _too_complex(
                "depth",
                f"the query is nested {depth} levels deep; at most {limits.max_depth} are accepted",
                limits.max_depth,
                depth,
            )
        )
    return errors


# ---------------------------------------------------------------------------------------------
# cost: the schema and the variables decide


def _field_definition(parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
    if name == "__typename":
        return TypeNameMetaFieldDef
    if name == "__schema":
        return SchemaMetaFieldDef
    if name == "__type":
        return TypeMetaFieldDef
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        definition: GraphQLField | None = parent.fields.get(name)
        return definition
    return None


def _as_count(value: Any) -> int | None:
    """A usable item count from an argument value: a non-negative int (capped), else None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return min(max(value, 0), _HUGE)


def _literal_count(node: Any) -> int | None:
    if not isinstance(node, IntValueNode):
        return None
    digits = node.value.lstrip("-")
    if len(digits) > 15:  # beyond any real page size, and int() of a huge literal is slow
        return 0 if node.value.startswith("-") else _HUGE
    return _as_count(int(node.value))


def _default_count(argument: GraphQLArgument) -> int | None:
    """An argument's schema default as a count: a coerced value (code-first schemas) or the
    `default` graphql-core 3.3 keeps for SDL-built ones (a value or a literal)."""
    count = _as_count(argument.default_value)
    if count is None:
        default = getattr(argument, "default", None)
        if default is not None:
            count = _as_count(default.value)
            if count is None:
                count = _literal_count(default.literal)
    return count


class _CostModel:
    """Multipliers for list fields, given one operation's variables."""

    def __init__(
        self,
        operation: OperationDefinitionNode | None,
        variables: Mapping[str, Any] | None,
        default_list_size: int,
    ) -> None:
        self._variables = variables if isinstance(variables, Mapping) else {}
        self._defaults: dict[str, Any] = {}
        for definition in (operation.variable_definitions or ()) if operation else ():
            self._defaults[definition.variable.name.value] = definition.default_value
        self._default_list_size = default_list_size

    def _argument_count(self, field: FieldNode, definition: GraphQLField) -> int | None:
        given = {argument.name.value: argument.value for argument in field.arguments or ()}
        for name in SIZE_ARGUMENTS:
            value = given.get(name)
            if isinstance(value, VariableNode):
                variable = value.name.value
                if variable in self._variables:
                    count = _as_count(self._variables[variable])
                else:
                    count = _literal_count(self._defaults.get(variable))
            else:
                count = _literal_count(value)
            if count is not None:
                return count
        for name in SIZE_ARGUMENTS:
            declared = definition.args.get(name)
            if declared is not None:
                count = _default_count(declared)
                if count is not None:
                    return count
        return None

    def step(
        self, field: FieldNode, parent: GraphQLNamedType | None
    ) -> tuple[int, GraphQLNamedType | None]:
        """The field's multiplier and the type its own selection set is on."""
        definition = _field_definition(parent, field.name.value)
        if definition is None:
            return 1, None
        field_type = definition.type
        if isinstance(field_type, GraphQLNonNull):
            field_type = field_type.of_type
        if not isinstance(field_type, GraphQLList):
            return 1, get_named_type(field_type)
        count = self._argument_count(field, definition)
        multiplier = self._default_list_size if count is None else count
        return multiplier, get_named_type(field_type)


def _cost(
    root: SelectionSetNode,
    parent: GraphQLNamedType | None,
    model: _CostModel,
    schema: GraphQLSchema,
    fragment_costs: Mapping[str, int],
) -> int:
    # cost(field) = 1 + m * cost(sub-selection) unrolls to: each field selected costs the
    # product of the multipliers of the list fields above it. A walk with that product.
    total = 0
    stack: list[tuple[SelectionSetNode, GraphQLNamedType | None, int]] = [(root, parent, 1)]
    while stack:
        selection_set, on_type, factor = stack.pop()
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += factor
                if selection.selection_set is not None:
                    multiplier, child_type = model.step(selection, on_type)
                    if multiplier:
                        stack.append((selection.selection_set, child_type, factor * multiplier))
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                child = schema.get_type(condition.name.value) if condition else on_type
                stack.append((selection.selection_set, child, factor))
            elif isinstance(selection, FragmentSpreadNode):
                total += factor * fragment_costs.get(selection.name.value, 0)
    return total


def _operation_type(schema: GraphQLSchema, operation: OperationDefinitionNode) -> Any:
    if operation.operation is OperationType.MUTATION:
        return schema.mutation_type
    if operation.operation is OperationType.SUBSCRIPTION:
        return schema.subscription_type
    return schema.query_type


def estimate_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None,
    *,
    default_list_size: int = DEFAULT_LIST_SIZE,
) -> int:
    """The estimated cost of `operation` (see the module docstring for the formula)."""
    model = _CostModel(operation, variables, default_list_size)
    fragments = _fragments(document)
    costs: dict[str, int] = {}
    for name in _dependency_order(fragments):
        fragment = fragments[name]
        on_type = schema.get_type(fragment.type_condition.name.value)
        costs[name] = _cost(fragment.selection_set, on_type, model, schema, costs)
    return _cost(operation.selection_set, _operation_type(schema, operation), model, schema, costs)


def check_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None,
    limits: QueryLimits,
) -> GraphQLError | None:
    """The cost limit for one request (its variables may change the answer)."""
    cost = estimate_cost(
        schema, document, operation, variables, default_list_size=limits.default_list_size
    )
    if cost <= limits.max_cost:
        return None
    return _too_complex(
        "cost",
        f"the query's estimated cost is {cost}; at most {limits.max_cost} is accepted",
        limits.max_cost,
        cost,
    )


def check_query(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation: OperationDefinitionNode,
    variables: Mapping[str, Any] | None,
    limits: QueryLimits,
) -> list[GraphQLError]:
    """Every document check and the cost check together (the engine splits them to cache)."""
    errors = check_document(document, limits)
    if not errors:
        cost = check_cost(schema, document, operation, variables, limits)
        if cost is not None:
            errors.append(cost)
    return errors
