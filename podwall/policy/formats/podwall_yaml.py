"""podwall's own policy file format (YAML, `apiVersion: podwall.io/v1`, `kind: Policy`).

`parse_policy` turns text into a validated `Policy` or raises `InputError` listing every
fault it found, each located by file, document, object and field path (with the YAML
line): a bad file is rejected whole. A file may hold several documents; they are merged
in order, and a group or rule defined twice, in any documents, is an error.
`dump_policy` (podwall_yaml_write.py, re-exported here) writes the stable form that
`parse_policy` reads back to the same policy. Only `load_policy` touches the file system.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from podwall.core.errors import InputError, Location, Problem
from podwall.policy.crosscheck import GroupEntry, RuleEntry, cross_check
from podwall.policy.formats.podwall_yaml_write import dump_policy as dump_policy
from podwall.policy.inspection import InspectionSpec
from podwall.policy.model import (
    API_VERSION,
    KIND,
    Group,
    Metadata,
    Mode,
    Policy,
    PolicySpec,
    Rule,
    id_problem,
    sensor_problems,
)
from podwall.policy.specs import check_group_name

MAX_POLICY_BYTES = 16 * 1024 * 1024
MAX_NODES_PER_DOCUMENT = 200_000  # bounds alias expansion ("billion laughs")
MAX_DEPTH = 64

_YAML_STR = "tag:yaml.org,2002:str"
_YAML_VALUE = "tag:yaml.org,2002:value"  # a plain `=`, which YAML 1.1 reserves; we read it as text
_YAML_MERGE = "tag:yaml.org,2002:merge"
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "timestamp"))
# A plain `!=` or `!regex` parses as a YAML tag with an empty value; the intent is obvious.
_OPERATOR_TAGS = frozenset({"!=", "!regex"})


class _SpecShell(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaultMode: Mode = "discover"
    strict: StrictBool = False
    staged: StrictBool = False
    groups: list[Any] = Field(default_factory=list)
    rules: list[Any] = Field(default_factory=list)
    inspection: Any = None  # validated on its own (see _read_inspection)


class _DocShell(BaseModel):
    """A document's frame; its groups and rules are validated one by one so that all faults show."""

    model_config = ConfigDict(extra="forbid")

    apiVersion: str
    kind: str
    metadata: Metadata
    spec: _SpecShell = Field(default_factory=_SpecShell)


_DOC_FIELDS = ("apiVersion", "kind", "metadata", "spec")
_SPEC_FIELDS = ("defaultMode", "strict", "staged", "groups", "rules", "inspection")
_GROUP_FIELDS = ("name", "criteria", "members", "mode", "dlp", "waf", "comment")
_RULE_FIELDS = (
    "id",
    "name",
    "from",
    "to",
    "ports",
    "applications",
    "l7",
    "action",
    "tier",
    "priority",
    "origin",
    "disabled",
    "staged",
    "hits",
    "comment",
)
_CRITERION_FIELDS = ("key", "op", "value")
# Fields allowed under each nested mapping, for "did you mean" hints.
_NESTED_FIELDS: dict[str, tuple[str, ...]] = {
    "metadata": ("name",),
    "spec": _SPEC_FIELDS,
    "criteria": _CRITERION_FIELDS,
    "dlp": ("status", "settings"),
    "waf": ("status", "settings"),
    "settings": ("name", "action"),
    "inspection": ("waf", "dlpSensors", "wafSensors", "threats"),
    "l7": ("http", "grpc", "dns", "redis", "sql", "tls"),
    "http": ("methods", "paths", "hosts", "headers"),
    "paths": ("exact", "prefix", "regex"),
    "headers": ("name", "value", "regex"),
    "grpc": ("services", "methods"),
    "dns": ("names",),
    "redis": ("commands",),
    "sql": ("kinds",),
    "tls": ("sni",),
}


# ---------------------------------------------------------------------------------------------
# YAML nodes to Python values, remembering where each value was


@dataclass(slots=True)
class _Document:
    index: int
    value: Any
    marks: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (line, column), 1-based
    bad_paths: set[str] = field(default_factory=set)  # values already reported as unreadable


class _TooLarge(Exception):
    pass


class _Converter:
    """Builds plain values from a composed document, rejecting duplicate keys and unknown tags."""

    def __init__(self, doc: _Document, problems: list[Problem], loc: Location) -> None:
        self.doc = doc
        self.problems = problems
        self.loc = loc
        self.count = 0
        self.active: set[int] = set()
        self.scalars = yaml.SafeLoader("")

    def problem(self, path: str, node: yaml.Node, message: str) -> None:
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        at = Location(file=self.loc.file, document=self.loc.document, path=path or None)
        self.problems.append(Problem(at, f"{message} (line {line}, column {col})"))

    def convert(self, node: yaml.Node, path: str, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_NODES_PER_DOCUMENT or depth > MAX_DEPTH:
            raise _TooLarge
        if id(node) in self.active:
            self.problem(path, node, "recursive YAML alias")
            return None
        if isinstance(node, yaml.MappingNode):
            self.active.add(id(node))
            try:
                return self._mapping(node, path, depth)
            finally:
                self.active.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            self.active.add(id(node))
            try:
                out = []
                for i, item in enumerate(node.value):
                    sub = f"{path}[{i}]"
                    self.doc.marks.setdefault(sub, (item.start_mark.line + 1, item.start_mark.column + 1))
                    out.append(self.convert(item, sub, depth + 1))
                return out
            finally:
                self.active.discard(id(node))
        return self._scalar(node, path)

    def _mapping(self, node: yaml.MappingNode, path: str, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _YAML_MERGE:
                self.problem(path, key_node, "YAML merge keys (<<) are not supported; write the fields out")
                continue
            key = self._scalar(key_node, path) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.problem(path, key_node, "mapping keys must be strings")
                continue
            sub = f"{path}.{key}" if path else key
            if key in out:
                self.problem(sub, key_node, f"duplicate key {key!r}")
                self.doc.bad_paths.add(sub)
                continue
            self.doc.marks.setdefault(sub, (key_node.start_mark.line + 1, key_node.start_mark.column + 1))
            out[key] = self.convert(value_node, sub, depth + 1)
        return out

    def _scalar(self, node: yaml.Node, path: str) -> Any:
        tag = node.tag
        if tag == _YAML_VALUE:
            return str(node.value)
        if tag in _OPERATOR_TAGS and node.value == "":
            return tag
        if tag not in _SCALAR_TAGS:
            self.problem(path, node, f"unsupported YAML tag {tag!r} (quote values that start with '!')")
            self.doc.bad_paths.add(path)
            return None
        if tag == _YAML_STR:
            return str(node.value)
        try:
            return self.scalars.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            self.problem(path, node, f"cannot read value {node.value!r}: {exc}")
            self.doc.bad_paths.add(path)
            return None


def _unquoted_operator(text: str, line: int) -> bool:
    lines = text.splitlines()
    if not 0 <= line < len(lines):
        return False
    src = lines[line]
    return any(op in src and f"'{op}" not in src and f'"{op}' not in src for op in _OPERATOR_TAGS)


def _compose(text: str, loc: Location, problems: list[Problem]) -> list[_Document]:
    docs: list[_Document] = []
    loader = yaml.SafeLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            doc = _Document(index=len(docs), value=None)
            doc_loc = Location(file=loc.file, document=doc.index)
            if node is not None:
                try:
                    doc.value = _Converter(doc, problems, doc_loc).convert(node, "")
                except _TooLarge:
                    problems.append(Problem(doc_loc, "document is too large or nests or expands aliases too much"))
            docs.append(doc)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        what = " ".join(p for p in (exc.context, exc.problem) if p) or "malformed YAML"
        if mark is not None and _unquoted_operator(text, mark.line):
            what += "; quote operators that start with '!', such as '!=' and '!regex'"
        problems.append(Problem(Location(file=loc.file, document=len(docs)), f"YAML syntax error: {what}{where}"))
    except yaml.YAMLError as exc:
        problems.append(Problem(Location(file=loc.file, document=len(docs)), f"YAML error: {exc}"))
    finally:
        loader.dispose()
    return docs


# ---------------------------------------------------------------------------------------------
# Validation errors to located problems


def _path(prefix: str, loc: tuple[int | str, ...]) -> str:
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out = f"{out}.{part}" if out else str(part)
    return out


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _describe(value: object) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, list | dict):
        return _kind(value)
    return f"{_kind(value)} {value!r}"


def _fields_for(base: tuple[str, ...], loc: tuple[int | str, ...]) -> tuple[str, ...]:
    """The fields allowed where an unknown one was found, for a 'did you mean' hint."""
    parents = [p for p in loc[:-1] if isinstance(p, str)]
    if not parents:
        return base
    return _NESTED_FIELDS.get(parents[-1], ())


def _message(err: Any, base_fields: tuple[str, ...]) -> str:
    kind = err["type"]
    loc = tuple(err["loc"])
    value = err.get("input")
    name = str(loc[-1]) if loc else ""
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(name, _fields_for(base_fields, loc), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown field {name!r}{hint}"
    if kind == "missing":
        return f"missing required field {name!r}"
    if kind == "literal_error":
        what = "mode" if name in ("mode", "defaultMode") else "value"
        return f"invalid {what} {value!r}: expected {ctx.get('expected', 'another value')}"
    if kind == "string_type":
        hint = " (quote it)" if isinstance(value, int | float | bool) else ""
        return f"expected a string, got {_describe(value)}{hint}"
    if kind == "int_type":
        return f"expected an integer, got {_describe(value)}"
    if kind == "bool_type":
        return f"expected true or false, got {_describe(value)}"
    if kind == "list_type":
        return f"expected a list, got {_kind(value)}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping, got {_kind(value)}"
    if kind == "too_short":
        return "must not be empty"
    if kind in ("too_long", "string_too_long"):
        unit = "characters" if kind == "string_too_long" else "entries"
        return f"is longer than {ctx.get('max_length')} {unit}"
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ")


class _Collector:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[Problem] = []

    def add(self, doc: _Document, obj: str | None, path: str, message: str) -> None:
        if any(path == bad or path.startswith((f"{bad}.", f"{bad}[")) for bad in doc.bad_paths):
            return  # the unreadable value was reported already; its validation error would repeat it
        mark = _mark(doc, path)
        if mark is not None:
            message = f"{message} (line {mark[0]})"
        loc = Location(file=self.filename, document=doc.index, obj=obj, path=path or None)
        self.problems.append(Problem(loc, message))

    def validation(
        self, doc: _Document, obj: str | None, prefix: str, exc: ValidationError, base: tuple[str, ...]
    ) -> None:
        for err in exc.errors():
            loc = tuple(err["loc"])
            self.add(doc, obj, _path(prefix, loc), _message(err, base))


def _mark(doc: _Document, path: str) -> tuple[int, int] | None:
    while path:
        if path in doc.marks:
            return doc.marks[path]
        cut = max(path.rfind("."), path.rfind("["))
        path = path[:cut] if cut > 0 else ""
    return None


def _loc(filename: str, doc: _Document, obj: str, path: str) -> Location:
    return Location(file=filename, document=doc.index, obj=obj, path=path)


# ---------------------------------------------------------------------------------------------
# Public API


@dataclass(slots=True)
class _Merged:
    name: str | None = None
    default_mode: Mode | None = None
    mode_from: int | None = None
    strict: bool | None = None
    strict_from: int | None = None
    groups: list[Group] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    group_entries: list[GroupEntry] = field(default_factory=list)
    rule_entries: list[RuleEntry] = field(default_factory=list)
    inspection: InspectionSpec | None = None
    inspection_from: int | None = None
    group_docs: list[tuple[_Document, int]] = field(default_factory=list)  # per valid group: its document, index


def _group_obj(item: Any, i: int) -> str:
    if isinstance(item, dict) and isinstance(item.get("name"), str):
        return f"group {item['name']}"
    return f"group #{i}"


def _rule_obj(item: Any, i: int) -> str:
    if isinstance(item, dict):
        rule_id = item.get("id")
        if isinstance(rule_id, int) and not isinstance(rule_id, bool):
            return f"rule {rule_id}"
        if isinstance(item.get("name"), str):
            return f"rule {item['name']}"
    return f"rule #{i}"


def _valid_group_name(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return check_group_name(value)
    except ValueError:
        return None


def _read_document(doc: _Document, out: _Merged, col: _Collector) -> None:
    raw = doc.value
    if not isinstance(raw, dict):
        col.add(doc, None, "", f"a policy document must be a mapping, got {_kind(raw)}")
        return
    try:
        shell = _DocShell.model_validate(raw)
    except ValidationError as exc:
        col.validation(doc, None, "", exc, _DOC_FIELDS)
        shell = None
    if shell is not None:
        if shell.apiVersion != API_VERSION:
            col.add(
                doc,
                None,
                "apiVersion",
                f"unsupported apiVersion {shell.apiVersion!r}: expected {API_VERSION}",
            )
        if shell.kind != KIND:
            col.add(doc, None, "kind", f"unsupported kind {shell.kind!r}: expected {KIND}")
        if out.name is None:
            out.name = shell.metadata.name
    spec = raw.get("spec")
    if not isinstance(spec, dict):
        return
    mode = spec.get("defaultMode")
    if shell is not None and "defaultMode" in spec:
        if out.default_mode is None:
            out.default_mode, out.mode_from = shell.spec.defaultMode, doc.index
        elif shell.spec.defaultMode != out.default_mode:
            col.add(
                doc,
                None,
                "spec.defaultMode",
                f"defaultMode {mode!r} conflicts with {out.default_mode!r} set in document {out.mode_from}",
            )
    if shell is not None and "strict" in spec:
        if out.strict is None:
            out.strict, out.strict_from = shell.spec.strict, doc.index
        elif shell.spec.strict != out.strict:
            col.add(
                doc,
                None,
                "spec.strict",
                f"strict {shell.spec.strict} conflicts with {out.strict} set in document {out.strict_from}",
            )
    if "inspection" in spec:
        _read_inspection(doc, spec["inspection"], out, col)
    staged_doc = spec.get("staged") is True
    groups = spec.get("groups")
    for i, item in enumerate(groups if isinstance(groups, list) else ()):
        path = f"spec.groups[{i}]"
        obj = _group_obj(item, i)
        try:
            out.groups.append(Group.model_validate(item))
            out.group_docs.append((doc, i))
        except ValidationError as exc:
            col.validation(doc, obj, path, exc, _GROUP_FIELDS)
        name = _valid_group_name(item.get("name")) if isinstance(item, dict) else None
        if name is not None:
            members = item.get("members") if isinstance(item, dict) else None
            refs = tuple(m for m in members if isinstance(m, str)) if isinstance(members, list) else ()
            out.group_entries.append(GroupEntry(name, _loc(col.filename, doc, obj, path), refs))
    rules = spec.get("rules")
    for i, item in enumerate(rules if isinstance(rules, list) else ()):
        path = f"spec.rules[{i}]"
        obj = _rule_obj(item, i)
        if isinstance(item, dict) and "from_" in item:
            # `from_` is the Python spelling; files say `from`.
            col.add(doc, obj, f"{path}.from_", "unknown field 'from_'; did you mean 'from'?")
        if isinstance(item, dict) and "hits" in item:
            # Hit counts are what a dump reports; they are runtime state and read back as nothing.
            hits = item["hits"]
            if not isinstance(hits, int) or isinstance(hits, bool) or hits < 0:
                col.add(doc, obj, f"{path}.hits", f"hits must be a count (0 or more), got {_describe(hits)}")
            item = {k: v for k, v in item.items() if k != "hits"}
        if staged_doc and isinstance(item, dict):
            item = {**item, "staged": True}
        try:
            out.rules.append(Rule.model_validate(item))
        except ValidationError as exc:
            col.validation(doc, obj, path, exc, _RULE_FIELDS)
        if isinstance(item, dict):
            rule_id = item.get("id")
            good_id = (
                rule_id
                if isinstance(rule_id, int) and not isinstance(rule_id, bool) and id_problem(rule_id) is None
                else None
            )
            name = item.get("name") if isinstance(item.get("name"), str) else None
            out.rule_entries.append(
                RuleEntry(
                    good_id,
                    name,
                    _valid_group_name(item.get("from", item.get("from_"))),
                    _valid_group_name(item.get("to")),
                    _loc(col.filename, doc, obj, path),
                )
            )


def _read_inspection(doc: _Document, raw: Any, out: _Merged, col: _Collector) -> None:
    if out.inspection_from is not None:
        col.add(doc, None, "spec.inspection", f"inspection is already set in document {out.inspection_from}")
        return
    out.inspection_from = doc.index
    try:
        out.inspection = InspectionSpec.model_validate(raw)
    except ValidationError as exc:
        col.validation(doc, "inspection", "spec.inspection", exc, ("waf", "dlpSensors", "wafSensors", "threats"))


def _sensor_problems(merged: _Merged, col: _Collector) -> None:
    """Sensors the groups name must exist; reported at the group's place in its document."""
    inspection = merged.inspection or InspectionSpec()
    for problem in sensor_problems(merged.groups, inspection):
        index = int((problem.location.path or "").split("[", 2)[1].split("]")[0])
        doc, i = merged.group_docs[index]
        path = (problem.location.path or "").replace(f"spec.groups[{index}]", f"spec.groups[{i}]", 1)
        col.add(doc, problem.location.obj, path, problem.message)


def parse_policy(text: str, filename: str = "<policy>") -> Policy:
    """Parse and validate a policy file's text; raises InputError listing every located fault."""
    col = _Collector(filename)
    if len(text) > MAX_POLICY_BYTES:
        raise InputError(
            f"invalid policy {filename}",
            [Problem(Location(file=filename), f"policy text is larger than {MAX_POLICY_BYTES} bytes")],
        )
    docs = _compose(text, Location(file=filename), col.problems)
    merged = _Merged()
    present = [d for d in docs if d.value is not None]
    for doc in present:
        _read_document(doc, merged, col)
    if not present and not col.problems:
        col.problems.append(Problem(Location(file=filename), "no policy document found"))
    for problem in cross_check(merged.group_entries, merged.rule_entries):
        owner = next((d for d in docs if d.index == problem.location.document), None)
        mark = _mark(owner, problem.location.path or "") if owner is not None else None
        message = f"{problem.message} (line {mark[0]})" if mark is not None else problem.message
        col.problems.append(Problem(problem.location, message))
    _sensor_problems(merged, col)
    if col.problems:
        # Stable sort: faults stay in reading order within each document.
        col.problems.sort(key=lambda p: p.location.document if p.location.document is not None else -1)
        raise InputError(f"invalid policy {filename}", col.problems)
    spec = PolicySpec(
        defaultMode=merged.default_mode or "discover",
        strict=bool(merged.strict),
        groups=merged.groups,
        rules=merged.rules,
        inspection=merged.inspection or InspectionSpec(),
    )
    return Policy(metadata=Metadata(name=merged.name or "policy"), spec=spec)


def load_policy(path: str | Path) -> Policy:
    """Read a policy file (UTF-8) and parse it; unreadable files raise InputError too."""
    where = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read policy {where}", [Problem(Location(file=where), exc.strerror or str(exc))]
        ) from None
    if len(data) > MAX_POLICY_BYTES:
        raise InputError(
            f"invalid policy {where}",
            [Problem(Location(file=where), f"file is larger than {MAX_POLICY_BYTES} bytes")],
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"invalid policy {where}",
            [Problem(Location(file=where, offset=exc.start), "file is not valid UTF-8")],
        ) from None
    return parse_policy(text, where)
