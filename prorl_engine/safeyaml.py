"""YAML from people and browsers, read with limits: a config is small, shallow and plain data.

PyYAML's `safe_load` runs no code, but it still lets a short text cost a great deal: a 1.5 kB
"billion laughs" of nested aliases expands to 10^9 nodes as soon as anything walks it (a copy, a
JSON dump), and YAML nested some thousand levels deep overflows Python's stack in the composer.
`load` refuses both while the text is being read, before any of it is built:

- the text is at most `Limits.max_chars` characters;
- no node lies deeper than `Limits.max_depth` collections;
- at most `Limits.max_aliases` aliases, and the document, with every alias expanded, has at most
  `Limits.max_nodes` nodes (so aliases cannot multiply it, and cannot make it contain itself);
- values are JSON-like: mappings, lists, text, numbers, booleans and null (a date is read as text;
  `!!binary`, `!!set`, `!!omap`, `!!pairs` and `!!timestamp` are refused), integers have at most
  `Limits.max_int_digits` digits.
Every refusal is a `YamlLimitError`, a `yaml.YAMLError`, whose message says which limit was hit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
REFUSED_TAGS = (
    TIMESTAMP_TAG,
    "tag:yaml.org,2002:binary",
    "tag:yaml.org,2002:set",
    "tag:yaml.org,2002:omap",
    "tag:yaml.org,2002:pairs",
)


@dataclass(frozen=True)
class Limits:
    """What one YAML document may cost. The defaults hold any run config with room to spare."""

    max_chars: int = 131_072
    max_depth: int = 32
    max_aliases: int = 64
    max_nodes: int = 20_000
    max_int_digits: int = 32


class YamlLimitError(yaml.YAMLError):
    """A YAML text refused for its size, depth, aliases or value types (the message says which)."""


def load(text: str, limits: Limits = Limits()) -> Any:
    """The one document in `text` as plain data, or YamlLimitError / yaml.YAMLError."""
    if len(text) > limits.max_chars:
        raise YamlLimitError(f"the YAML text has {len(text):,} characters; at most {limits.max_chars:,} are read")
    _preflight(text, limits)
    loader = _LimitedLoader(text, limits)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _preflight(text: str, limits: Limits) -> None:
    """Depth and alias count from libyaml's event stream, where PyYAML was built with it: the same
    refusals as `_LimitedLoader`'s, in microseconds per event (the pure-Python scanner looks up to
    1,024 characters ahead at every flow level, so a text of 5,000 '[' costs it about 0.3 s)."""
    if not yaml.__with_libyaml__:
        return
    try:
        _count_events(yaml.parse(text, Loader=yaml.CSafeLoader), limits)
    except yaml.MarkedYAMLError as exc:  # libyaml's scanner stops at 1,000 flow levels on its own
        if "nesting depth" in str(exc.problem):
            raise YamlLimitError(f"the YAML text is nested deeper than {limits.max_depth} levels") from None
        raise


def _count_events(events: Iterable[yaml.Event], limits: Limits) -> None:
    depth = aliases = 0
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > limits.max_aliases:
                raise YamlLimitError(f"more than {limits.max_aliases} aliases (*name) in the YAML text")
        elif isinstance(event, (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            if depth + 1 > limits.max_depth:  # a node's depth counts the collections it lies in, and itself
                raise YamlLimitError(f"the YAML text is nested deeper than {limits.max_depth} levels")
            depth += not isinstance(event, yaml.ScalarEvent)
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1


class _LimitedLoader(yaml.SafeLoader):
    """SafeLoader that counts depth and aliases while composing, and the expanded size before building."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != TIMESTAMP_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, text: str, limits: Limits):
        super().__init__(text)
        self.limits = limits
        self.depth = 0
        self.aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > self.limits.max_aliases:
                raise YamlLimitError(f"more than {self.limits.max_aliases} aliases (*name) in the YAML text")
            return super().compose_node(parent, index)
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise YamlLimitError(f"the YAML text is nested deeper than {self.limits.max_depth} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expanded_size(node, self.limits.max_nodes)
        return node

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > self.limits.max_int_digits:
            raise YamlLimitError(
                f"an integer longer than {self.limits.max_int_digits} characters at line {node.start_mark.line + 1}"
            )
        return super().construct_yaml_int(node)

    def construct_refused(self, node: yaml.Node) -> Any:
        raise YamlLimitError(
            f"{node.tag} values are not accepted (line {node.start_mark.line + 1}): "
            "a config holds mappings, lists, text, numbers, booleans and null"
        )


_LimitedLoader.add_constructor("tag:yaml.org,2002:int", _LimitedLoader.construct_yaml_int)
for _tag in REFUSED_TAGS:
    _LimitedLoader.add_constructor(_tag, _LimitedLoader.construct_refused)


def _check_expanded_size(root: yaml.Node, max_nodes: int) -> None:
    """Refuse a document that, with its aliases expanded, has more than `max_nodes` nodes, or that
    contains itself. Iterative (no recursion) and linear in the distinct nodes: a node reached
    through several aliases is sized once."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > max_nodes:
                raise YamlLimitError(
                    f"the YAML document has more than {max_nodes:,} values once its aliases are expanded"
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise YamlLimitError("an alias refers to a collection that contains it (a recursive YAML document)")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
