"""Checks across the objects of a policy: names and IDs unique, references defined, zones acyclic.

They work on light entries (`GroupEntry`, `RuleEntry`) rather than models, so that the YAML
loader can run them on raw documents and locate every fault at once, and `Policy` can run them
on itself after validation.
"""

from __future__ import annotations

from dataclasses import dataclass

from podwall.core.errors import Location, Problem
from podwall.policy.specs import RESERVED_GROUPS


@dataclass(frozen=True, slots=True)
class GroupEntry:
    """What `cross_check` needs of a group: its name and where it was declared (path of the item)."""

    name: str
    location: Location
    members: tuple[str, ...] = ()  # a zone's members


@dataclass(frozen=True, slots=True)
class RuleEntry:
    """What `cross_check` needs of a rule (fields may be None when the raw item lacked them)."""

    id: int | None
    name: str | None
    from_: str | None
    to: str | None
    location: Location


def _at(loc: Location, field: str) -> Location:
    path = f"{loc.path}.{field}" if loc.path else field
    return Location(file=loc.file, document=loc.document, obj=loc.obj, path=path)


def _where(loc: Location) -> str:
    parts = []
    if loc.document is not None:
        parts.append(f"document {loc.document}")
    if loc.path:
        parts.append(loc.path)
    return " ".join(parts) if parts else "earlier"


def cross_check(groups: list[GroupEntry], rules: list[RuleEntry]) -> list[Problem]:
    """Faults across objects: reserved or duplicate group names, duplicate rule IDs or names,
    rules whose `from`/`to` name no group. Returns every fault, located."""
    problems: list[Problem] = []
    seen_groups: dict[str, GroupEntry] = {}
    for g in groups:
        if g.name in RESERVED_GROUPS:
            problems.append(Problem(_at(g.location, "name"), f"group {g.name!r} is built in and cannot be redefined"))
            continue
        first = seen_groups.get(g.name)
        if first is not None:
            problems.append(
                Problem(
                    _at(g.location, "name"),
                    f"duplicate group name {g.name!r} (first defined at {_where(first.location)})",
                )
            )
            continue
        seen_groups[g.name] = g
    defined = set(seen_groups)
    problems.extend(_zone_problems(seen_groups, defined))
    seen_ids: dict[int, RuleEntry] = {}
    seen_names: dict[str, RuleEntry] = {}
    for r in rules:
        if r.id is not None:
            prior = seen_ids.get(r.id)
            if prior is not None:
                problems.append(
                    Problem(
                        _at(r.location, "id"),
                        f"duplicate rule ID {r.id} (first used at {_where(prior.location)})",
                    )
                )
            else:
                seen_ids[r.id] = r
        if r.name is not None:
            prior = seen_names.get(r.name)
            if prior is not None:
                problems.append(
                    Problem(
                        _at(r.location, "name"),
                        f"duplicate rule name {r.name!r} (first used at {_where(prior.location)})",
                    )
                )
            else:
                seen_names[r.name] = r
        for field_name, ref in (("from", r.from_), ("to", r.to)):
            if ref is not None and ref not in defined and ref not in RESERVED_GROUPS:
                problems.append(
                    Problem(
                        _at(r.location, field_name),
                        f"undefined group {ref!r}: define it under spec.groups or use external, nodes or containers",
                    )
                )
    return problems


def _zone_problems(groups: dict[str, GroupEntry], defined: set[str]) -> list[Problem]:
    """Zones naming undefined groups, and zones that contain themselves through other zones."""
    problems: list[Problem] = []
    for g in groups.values():
        for i, member in enumerate(g.members):
            if member not in defined and member not in RESERVED_GROUPS:
                problems.append(
                    Problem(
                        _at(g.location, f"members[{i}]"),
                        f"zone {g.name!r} names undefined group {member!r}",
                    )
                )
    state: dict[str, int] = {}  # 1: being visited, 2: done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for member in groups[name].members:
            if member not in groups:
                continue
            if state.get(member) == 1:
                cycle = " -> ".join([*trail[trail.index(member) :], member])
                entry = groups[member]
                problems.append(Problem(_at(entry.location, "members"), f"zones contain each other: {cycle}"))
            elif state.get(member) is None:
                visit(member, [*trail, member])
        state[name] = 2

    for name, g in groups.items():
        if g.members and name not in state:
            visit(name, [name])
    return problems
