"""Our schema against the team contract (../shared/schema.graphql, beside the checkout).

Two promises, checked whenever the contract file is present (the tests skip without it):

- Coverage: every type, field, argument and enum value the contract names is served, except
  what `NOT_SERVED_YET` lists. That list only shrinks: an entry that is served now fails the
  test too, so whoever ships a slice deletes its lines here in the same change.
- Shape: where both schemas have a type, field or argument, ours has exactly the contract's
  kind and type. (We may add fields; renaming or reshaping one is a breaking change that needs
  a closing note.)

The schema we serve is also committed as schema.graphql (see tests/test_schema_file.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    build_schema,
)

from gateway.schema import build_schema as build_ours

CONTRACT_PATH = Path(__file__).resolve().parents[2] / "shared" / "schema.graphql"

# What the contract names that we do not serve yet, by the contract's own spelling: `Type` for a
# whole type (its fields and values come with it), `Type.field` for a field of a type we serve
# (its arguments come with it), `Type.field(arg)` for an argument of a field we serve, and
# `Enum.VALUE` for a value of an enum we serve. Sorted within each area; later work empties it.
NOT_SERVED_YET: set[str] = set()

FieldedType = GraphQLObjectType | GraphQLInterfaceType | GraphQLInputObjectType
KINDS = (
    GraphQLObjectType,
    GraphQLInterfaceType,
    GraphQLUnionType,
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLScalarType,
)


@pytest.fixture(scope="module")
def contract() -> GraphQLSchema:
    if not CONTRACT_PATH.exists():
        pytest.skip(f"the contract is not beside the checkout ({CONTRACT_PATH})")
    return build_schema(CONTRACT_PATH.read_text())


@pytest.fixture(scope="module")
def ours() -> GraphQLSchema:
    return build_ours()._schema


def named_types(schema: GraphQLSchema) -> dict[str, GraphQLNamedType]:
    return {name: kind for name, kind in schema.type_map.items() if not name.startswith("__")}


def missing_from(ours: GraphQLSchema, contract: GraphQLSchema) -> set[str]:
    """What the contract names that we do not serve, named as `NOT_SERVED_YET` names it."""
    missing: set[str] = set()
    served = named_types(ours)
    for name, theirs in named_types(contract).items():
        mine = served.get(name)
        if mine is None:
            missing.add(name)
        elif isinstance(theirs, FieldedType) and isinstance(mine, FieldedType):
            for field_name, field in theirs.fields.items():
                if field_name not in mine.fields:
                    missing.add(f"{name}.{field_name}")
                    continue
                ours_args = getattr(mine.fields[field_name], "args", {})
                for arg_name in getattr(field, "args", {}):
                    if arg_name not in ours_args:
                        missing.add(f"{name}.{field_name}({arg_name})")
        elif isinstance(theirs, GraphQLEnumType) and isinstance(mine, GraphQLEnumType):
            missing.update(f"{name}.{value}" for value in theirs.values if value not in mine.values)
    return missing


def shared_object_types(contract: GraphQLSchema, ours: GraphQLSchema) -> list[str]:
    return sorted(
        name
        for name, kind in ours.type_map.items()
        if not name.startswith("__")
        and isinstance(kind, GraphQLObjectType)
        and isinstance(contract.type_map.get(name), GraphQLObjectType)
    )


def test_everything_in_the_contract_is_served_or_listed(
    contract: GraphQLSchema, ours: GraphQLSchema
) -> None:
    missing = missing_from(ours, contract)
    unlisted = sorted(missing - NOT_SERVED_YET)
    assert not unlisted, (
        f"the contract names {', '.join(unlisted)} but we do not serve it: serve it, or (only "
        "for a slice not built yet) add it to NOT_SERVED_YET in tests/test_contract.py"
    )


def test_not_served_yet_only_shrinks(contract: GraphQLSchema, ours: GraphQLSchema) -> None:
    missing = missing_from(ours, contract)
    stale = sorted(NOT_SERVED_YET - missing)
    assert not stale, (
        f"{', '.join(stale)} on NOT_SERVED_YET in tests/test_contract.py is served now (or no "
        "longer in the contract): delete it from the list"
    )


def kind_of(named: GraphQLNamedType) -> str:
    # By base class: strawberry builds its own subclasses (CustomGraphQLEnumType, …).
    return next(kind.__name__ for kind in KINDS if isinstance(named, kind))


def test_shared_types_are_of_the_contract_kind(
    contract: GraphQLSchema, ours: GraphQLSchema
) -> None:
    served = named_types(ours)
    problems = [
        f"{name} is a {kind_of(served[name])} here but a {kind_of(theirs)} in the contract"
        for name, theirs in named_types(contract).items()
        if name in served and kind_of(served[name]) != kind_of(theirs)
    ]
    assert problems == []


def test_we_serve_a_good_part_of_the_contract(contract: GraphQLSchema, ours: GraphQLSchema) -> None:
    assert len(shared_object_types(contract, ours)) >= 15


def test_every_shared_type_has_the_contract_fields(
    contract: GraphQLSchema, ours: GraphQLSchema
) -> None:
    problems = []
    for name in shared_object_types(contract, ours):
        theirs = contract.type_map[name]
        mine = ours.type_map[name]
        assert isinstance(theirs, GraphQLObjectType) and isinstance(mine, GraphQLObjectType)
        is_root = name in {"Query", "Mutation", "Subscription"}
        for field_name, field in theirs.fields.items():
            if field_name not in mine.fields:
                if not is_root:  # root fields arrive issue by issue; object fields may not
                    problems.append(f"{name}.{field_name} is missing")
                continue
            ours_field = mine.fields[field_name]
            if str(ours_field.type) != str(field.type):
                problems.append(f"{name}.{field_name}: {ours_field.type} != contract {field.type}")
            for arg_name, arg in field.args.items():
                if arg_name not in ours_field.args:
                    problems.append(f"{name}.{field_name}({arg_name}) is missing")
                elif str(ours_field.args[arg_name].type) != str(arg.type):
                    problems.append(
                        f"{name}.{field_name}({arg_name}): {ours_field.args[arg_name].type} != {arg.type}"
                    )
    assert problems == []


def test_shared_interfaces_and_inputs_have_the_contract_field_types(
    contract: GraphQLSchema, ours: GraphQLSchema
) -> None:
    problems = []
    for name, mine in named_types(ours).items():
        theirs = contract.type_map.get(name)
        for kind in (GraphQLInterfaceType, GraphQLInputObjectType):
            if isinstance(mine, kind) and isinstance(theirs, kind):
                for field_name, field in theirs.fields.items():
                    ours_field = mine.fields.get(field_name)
                    if ours_field is not None and str(ours_field.type) != str(field.type):
                        problems.append(
                            f"{name}.{field_name}: {ours_field.type} != contract {field.type}"
                        )
    assert problems == []


def test_shared_unions_have_the_contract_members(
    contract: GraphQLSchema, ours: GraphQLSchema
) -> None:
    for name, mine in named_types(ours).items():
        theirs = contract.type_map.get(name)
        if isinstance(mine, GraphQLUnionType) and isinstance(theirs, GraphQLUnionType):
            missing = {t.name for t in theirs.types} - {t.name for t in mine.types}
            assert not missing, f"union {name} lacks {sorted(missing)}"


def test_shared_enums_have_the_contract_values(
    contract: GraphQLSchema, ours: GraphQLSchema
) -> None:
    for name, kind in ours.type_map.items():
        theirs = contract.type_map.get(name)
        if isinstance(kind, GraphQLEnumType) and isinstance(theirs, GraphQLEnumType):
            assert set(kind.values) == set(theirs.values), name


def test_the_root_fields_of_the_core_slices_are_served(ours: GraphQLSchema) -> None:
    assert ours.query_type is not None and ours.subscription_type is not None
    for field in (
        "prices",
        "priceHistory",
        "ohlcv",
        "status",
        "providers",
        "provider",
        "pools",
        "rotationHistory",
        "failures",
        "alerts",
    ):
        assert field in ours.query_type.fields, field
    for field in ("priceTicks", "providerStates", "rotations", "alerts"):
        assert field in ours.subscription_type.fields, field
