"""How many of some root fields a request will run, after fragments and @skip/@include.

Needed for the contract's rule that an Idempotency-Key header counts only for a request
that runs exactly one task-creating mutation. graphql-core's collect_fields would do it
but is internal API that changed shape between releases; this walk is small and stable.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from graphql import (
    BooleanValueNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionSetNode,
    VariableNode,
)


def _included(node: Any, variables: Mapping[str, Any]) -> bool:
    for directive in node.directives or ():
        name = directive.name.value
        if name not in ("skip", "include"):
            continue
        value: Any = True
        for argument in directive.arguments:
            if argument.name.value != "if":
                continue
            if isinstance(argument.value, BooleanValueNode):
                value = argument.value.value
            elif isinstance(argument.value, VariableNode):
                value = bool(variables.get(argument.value.name.value))
        if (name == "skip" and value) or (name == "include" and not value):
            return False
    return True


def running_root_fields(
    selection_set: SelectionSetNode,
    fragments: Mapping[str, FragmentDefinitionNode],
    variables: Mapping[str, Any],
    names: Collection[str],
) -> set[str]:
    """Response keys (alias or name) of the fields in ``names`` that will run."""
    keys: set[str] = set()
    for selection in selection_set.selections:
        if not _included(selection, variables):
            continue
        if isinstance(selection, FieldNode):
            if selection.name.value in names:
                keys.add(selection.alias.value if selection.alias else selection.name.value)
        elif isinstance(selection, InlineFragmentNode):
            keys |= running_root_fields(selection.selection_set, fragments, variables, names)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                keys |= running_root_fields(fragment.selection_set, fragments, variables, names)
    return keys
