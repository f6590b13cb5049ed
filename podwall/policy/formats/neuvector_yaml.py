"""The YAML reader for NeuVector CRs: safe loading that accepts what NeuVector's exports write.

NeuVector writes criteria operators unquoted (`op: =`, `op: !=`, `op: !regex`), which plain
YAML 1.1 reads as a value type or a tag; this loader reads them as the strings they mean, and
rejects duplicate keys, which PyYAML would otherwise let the last one win.
"""

from __future__ import annotations

from typing import Any

import yaml

from podwall.core.errors import InputError, Location, Problem
from podwall.inventory.kube import Document


class _Loader(yaml.SafeLoader):
    """Safe YAML loading that reads NeuVector's unquoted operators and rejects duplicate keys."""


def _plain_equals(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    # YAML 1.1 reserves a plain `=` (the "value" type); NeuVector's exports write `op: =`.
    return str(node.value)


def _operator_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> str:
    # `op: !=` parses as the tag `!=` on an empty value; the intent is plain.
    if isinstance(node, yaml.ScalarNode) and node.value == "" and suffix in ("=", "regex"):
        return f"!{suffix}"
    raise yaml.constructor.ConstructorError(
        None, None, f"unsupported YAML tag {node.tag!r} (quote values that start with '!')", node.start_mark
    )


def _mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"found duplicate key {key_node.value!r}",
                    key_node.start_mark,
                )
            seen.add(key_node.value)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor("tag:yaml.org,2002:value", _plain_equals)
_Loader.add_multi_constructor("!", _operator_tag)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def read_documents(text: str, filename: str) -> list[Document]:
    """The non-empty YAML documents of `text`; a syntax error raises a located InputError."""
    docs: list[Document] = []
    index = 0
    try:
        for data in yaml.load_all(text, Loader=_Loader):
            if data is not None:
                docs.append(Document(filename, index, data))
            index += 1
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        detail = getattr(exc, "problem", None) or str(exc)
        problem = Problem(Location(file=filename, document=index), f"YAML syntax error{where}: {detail}")
        raise InputError(f"invalid NeuVector policy {filename}", [problem]) from None
    return docs
