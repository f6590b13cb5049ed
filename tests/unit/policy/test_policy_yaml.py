"""The podwall YAML format: parsing, located validation errors, multi-document files, dump round trips."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.core.errors import InputError, Problem
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.formats.podwall_yaml import dump_policy, load_policy, parse_policy
from podwall.policy.model import Criterion, Group, Metadata, Mode, Policy, PolicySpec, Rule
from tests.unit.policy.policy_testkit import ext, obs, wl

REPO = Path(__file__).resolve().parents[3]
HEADER = "apiVersion: podwall.io/v1\nkind: Policy\nmetadata:\n  name: test\n"


def doc(spec: str) -> str:
    """A one-document policy whose spec is the given (dedented) YAML."""
    return HEADER + "spec:\n" + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ") + "\n"


def problems_of(text: str, filename: str = "p.yaml") -> list[Problem]:
    with pytest.raises(InputError) as info:
        parse_policy(text, filename)
    return info.value.problems


GOOD = doc(
    """
    defaultMode: monitor
    groups:
      - name: nv.redis.demo
        mode: protect
        criteria:
          - key: service
            op: =
            value: redis
          - key: namespace
            op: !=
            value: kube-*
      - name: lan
        criteria: [{key: address, op: '=', value: 10.0.0.0/8}]
    rules:
      - id: 10001
        name: web to redis
        from: containers
        to: nv.redis.demo
        ports: [tcp/6379]
        applications: [redis]
      - id: 1
        from: external
        to: lan
        action: deny
    """
)


def test_parse_good_policy() -> None:
    """A valid file parses, unquoted `=` and `!=` operators included, with defaults filled in."""
    policy = parse_policy(GOOD, "good.yaml")
    assert policy.metadata.name == "test"
    assert policy.spec.defaultMode == "monitor"
    assert [c.op for c in policy.spec.groups[0].criteria] == ["=", "!="]
    assert [(r.id, r.origin) for r in policy.spec.rules] == [(10001, "learned"), (1, "user")]
    assert policy.spec.rules[1].ports == ["any"]


ERROR_CASES: list[tuple[str, str, str | None, str, str]] = [
    # id, spec, obj, path, message fragment
    (
        "unknown-field",
        "rules: [{id: 1, from: external, to: containers, portz: [tcp/80]}]",
        "rule 1",
        "spec.rules[0].portz",
        "unknown field 'portz'; did you mean 'ports'?",
    ),
    (
        "unknown-spec-field",
        "rulez: []",
        None,
        "spec.rulez",
        "unknown field 'rulez'; did you mean 'rules'?",
    ),
    (
        "wrong-type-id",
        "rules: [{id: '1', from: external, to: containers}]",
        "rule #0",
        "spec.rules[0].id",
        "expected an integer, got a string",
    ),
    (
        "wrong-type-value",
        "groups: [{name: g, criteria: [{key: version, op: '=', value: 2}]}]",
        "group g",
        "spec.groups[0].criteria[0].value",
        "expected a string, got a number 2 (quote it)",
    ),
    (
        "wrong-type-rules",
        "rules: {id: 1}",
        None,
        "spec.rules",
        "expected a list",
    ),
    (
        "port-too-high",
        "rules: [{id: 1, from: external, to: containers, ports: [tcp/80, tcp/70000]}]",
        "rule 1",
        "spec.rules[0].ports[1]",
        "port 70000 in 'tcp/70000' is out of range 1-65535",
    ),
    (
        "port-range-order",
        "rules: [{id: 1, from: external, to: containers, ports: [udp/9000-8000]}]",
        "rule 1",
        "spec.rules[0].ports[0]",
        "reversed",
    ),
    (
        "port-transport",
        "rules: [{id: 1, from: external, to: containers, ports: [sctp/80]}]",
        "rule 1",
        "spec.rules[0].ports[0]",
        "unknown transport 'sctp'",
    ),
    (
        "bad-regex",
        "groups: [{name: g, criteria: [{key: service, op: regex, value: 'web('}]}]",
        "group g",
        "spec.groups[0].criteria[0].value",
        "invalid regular expression 'web('",
    ),
    (
        "bad-op",
        "groups: [{name: g, criteria: [{key: service, op: like, value: web}]}]",
        "group g",
        "spec.groups[0].criteria[0].op",
        "invalid value 'like'",
    ),
    (
        "bad-mode",
        "groups: [{name: g, mode: enforce, criteria: [{key: service, op: '=', value: web}]}]",
        "group g",
        "spec.groups[0].mode",
        "invalid mode 'enforce': expected 'discover', 'monitor' or 'protect'",
    ),
    (
        "bad-default-mode",
        "defaultMode: block",
        None,
        "spec.defaultMode",
        "invalid mode 'block'",
    ),
    (
        "id-zero",
        "rules: [{id: 0, from: external, to: containers}]",
        "rule 0",
        "spec.rules[0].id",
        "reserved for the implicit deny",
    ),
    (
        "id-out-of-range",
        "rules: [{id: 10000, from: external, to: containers}]",
        "rule 10000",
        "spec.rules[0].id",
        "in no range",
    ),
    (
        "origin-mismatch",
        "rules: [{id: 12, origin: learned, from: external, to: containers}]",
        "rule 12",
        "spec.rules[0].origin",
        "origin learned needs an ID in 10001-99999",
    ),
    (
        "undefined-group",
        "rules: [{id: 1, from: nv.ghost.demo, to: containers}]",
        "rule 1",
        "spec.rules[0].from",
        "undefined group 'nv.ghost.demo'",
    ),
    (
        "duplicate-id",
        "rules: [{id: 1, from: external, to: containers}, {id: 1, from: nodes, to: containers}]",
        "rule 1",
        "spec.rules[1].id",
        "duplicate rule ID 1 (first used at document 0 spec.rules[0])",
    ),
    (
        "duplicate-name",
        "rules: [{id: 1, name: x, from: external, to: containers}, {id: 2, name: x, from: nodes, to: containers}]",
        "rule 2",
        "spec.rules[1].name",
        "duplicate rule name 'x'",
    ),
    (
        "reserved-group",
        "groups: [{name: containers, criteria: [{key: service, op: '=', value: x}]}]",
        "group containers",
        "spec.groups[0].name",
        "built in and cannot be redefined",
    ),
    (
        "missing-field",
        "rules: [{id: 1, from: external}]",
        "rule 1",
        "spec.rules[0].to",
        "missing required field 'to'",
    ),
    (
        "duplicate-yaml-key",
        "rules: [{id: 1, from: external, from: nodes, to: containers}]",
        None,
        "spec.rules[0].from",
        "duplicate key 'from'",
    ),
    (
        "unsupported-tag",
        "rules: [{id: !!python/name:os.system 1, from: external, to: containers}]",
        None,
        "spec.rules[0].id",
        "unsupported YAML tag",
    ),
    (
        "python-spelling-of-from",
        "rules: [{id: 1, from_: external, to: containers}]",
        "rule 1",
        "spec.rules[0].from_",
        "unknown field 'from_'; did you mean 'from'?",
    ),
    (
        "address-mode",
        "groups: [{name: lan, mode: protect, criteria: [{key: address, op: '=', value: 10.0.0.0/8}]}]",
        "group lan",
        "spec.groups[0].mode",
        "address groups have no mode",
    ),
]


@pytest.mark.parametrize(
    ("spec", "obj", "path", "message"), [c[1:] for c in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_error_located(spec: str, obj: str | None, path: str, message: str) -> None:
    """Each kind of fault is reported with its file, document, object and field path."""
    problems = problems_of(doc(spec))
    assert len(problems) == 1, problems
    loc = problems[0].location
    assert (loc.file, loc.document, loc.obj, loc.path) == ("p.yaml", 0, obj, path)
    assert message in problems[0].message


def test_error_line_numbers() -> None:
    """Validation messages carry the YAML line of the offending node."""
    text = doc(
        """
        rules:
          - id: 1
            from: external
            to: containers
            ports:
              - tcp/80
              - tcp/99999
        """
    )
    (problem,) = problems_of(text)
    assert problem.location.path == "spec.rules[0].ports[1]"
    line = next(i for i, src in enumerate(text.splitlines(), 1) if "tcp/99999" in src)
    assert problem.message.endswith(f"(line {line})")


SYNTAX_CASES: list[tuple[str, str, int, int, str]] = [
    ("unclosed-flow", HEADER + "spec:\n  rules: [{id: 1\n", 0, 7, "YAML syntax error"),
    ("bad-indent", HEADER + "spec:\n  rules:\n  - id: 1\n   from: x\n", 0, 8, "YAML syntax error"),
    (
        "second-document",
        HEADER + "---\n" + HEADER + "spec: {rules: [}\n",
        1,
        10,
        "YAML syntax error",
    ),
    (
        "unquoted-operator-in-flow",
        HEADER + "spec:\n  groups: [{name: g, criteria: [{key: a, op: !=, value: b}]}]\n",
        0,
        6,
        "quote operators that start with '!'",
    ),
]


@pytest.mark.parametrize(
    ("text", "document", "line", "message"), [c[1:] for c in SYNTAX_CASES], ids=[c[0] for c in SYNTAX_CASES]
)
def test_yaml_syntax_errors(text: str, document: int, line: int, message: str) -> None:
    """YAML syntax errors are reported with the document and the line and column."""
    problems = [p for p in problems_of(text) if "YAML syntax error" in p.message]
    assert len(problems) == 1
    assert problems[0].location.document == document
    assert message in problems[0].message
    assert f"(line {line}, column " in problems[0].message


FRAME_CASES: list[tuple[str, str, str | None, str]] = [
    ("not-a-mapping", "- 1\n- 2\n", None, "must be a mapping, got a list"),
    ("wrong-api", HEADER.replace("podwall.io/v1", "podwall.io/v2"), "apiVersion", "unsupported apiVersion"),
    ("wrong-kind", HEADER.replace("Policy", "NetworkPolicy"), "kind", "unsupported kind"),
    (
        "no-metadata",
        "apiVersion: podwall.io/v1\nkind: Policy\n",
        "metadata",
        "missing required field 'metadata'",
    ),
    ("empty", "", None, "no policy document found"),
    ("comments-only", "# nothing\n", None, "no policy document found"),
]


@pytest.mark.parametrize(("text", "path", "message"), [c[1:] for c in FRAME_CASES], ids=[c[0] for c in FRAME_CASES])
def test_document_frame_errors(text: str, path: str | None, message: str) -> None:
    """Documents that are not policies (wrong shape, version or kind, nothing at all) are rejected."""
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].location.path == path
    assert message in problems[0].message


def test_several_errors_reported_at_once() -> None:
    """Every fault in a file is reported in one error, each with its own location."""
    text = doc(
        """
        groups:
          - name: g
            criteria: [{key: service, op: regex, value: '('}]
            mood: x
        rules:
          - {id: 1, from: g, to: nowhere, ports: [tcp/0]}
          - {id: 1, from: external, to: g, action: permit}
        """
    )
    paths = sorted(p.location.path or "" for p in problems_of(text))
    assert paths == sorted(
        [
            "spec.groups[0].criteria[0].value",
            "spec.groups[0].mood",
            "spec.rules[0].ports[0]",
            "spec.rules[0].to",
            "spec.rules[1].action",
            "spec.rules[1].id",
        ]
    )


def test_references_to_invalid_group_not_reported_twice() -> None:
    """A rule naming a group that exists but is invalid gets no extra 'undefined group' error."""
    text = doc(
        """
        groups:
          - {name: g, criteria: [{key: service, op: regex, value: '('}]}
        rules:
          - {id: 1, from: g, to: containers}
        """
    )
    assert [p.location.path for p in problems_of(text)] == ["spec.groups[0].criteria[0].value"]


MULTI = (
    doc(
        """
        defaultMode: protect
        groups:
          - {name: nv.web.demo, criteria: [{key: service, op: '=', value: web}]}
        rules:
          - {id: 1, from: external, to: nv.db.demo}
        """
    )
    + "---\n"
    + "---\n"
    + doc(
        """
        groups:
          - {name: nv.db.demo, criteria: [{key: service, op: '=', value: db}]}
        rules:
          - {id: 2, from: nv.web.demo, to: nv.db.demo, ports: [tcp/5432]}
        """
    ).replace("name: test", "name: second")
)


def test_multi_document_merge() -> None:
    """Documents merge in order: groups and rules from all, name and defaultMode from the first."""
    policy = parse_policy(MULTI, "multi.yaml")
    assert policy.metadata.name == "test"
    assert policy.spec.defaultMode == "protect"
    assert [g.name for g in policy.spec.groups] == ["nv.web.demo", "nv.db.demo"]
    assert [r.id for r in policy.spec.rules] == [1, 2]


MULTI_BAD: list[tuple[str, str, str, str]] = [
    (
        "duplicate-rule-across",
        "rules: [{id: 1, from: external, to: containers}]",
        "spec.rules[0].id",
        "duplicate rule ID 1 (first used at document 0 spec.rules[0])",
    ),
    (
        "duplicate-group-across",
        "groups: [{name: nv.web.demo, criteria: [{key: service, op: '=', value: w}]}]",
        "spec.groups[0].name",
        "duplicate group name 'nv.web.demo' (first defined at document 0 spec.groups[0])",
    ),
    (
        "default-mode-conflict",
        "defaultMode: monitor",
        "spec.defaultMode",
        "conflicts with 'protect' set in document 0",
    ),
]


@pytest.mark.parametrize(("spec", "path", "message"), [c[1:] for c in MULTI_BAD], ids=[c[0] for c in MULTI_BAD])
def test_multi_document_conflicts(spec: str, path: str, message: str) -> None:
    """Definitions repeated in a later document are errors located in that document."""
    problems = problems_of(MULTI + "---\n" + doc(spec))
    assert len(problems) == 1
    assert (problems[0].location.document, problems[0].location.path) == (3, path)
    assert message in problems[0].message


def test_dump_is_stable_and_round_trips() -> None:
    """Dumping sorts rules by ID, and parsing the dump gives the same policy and the same text again."""
    policy = parse_policy(GOOD, "good.yaml")
    text = dump_policy(policy)
    again = parse_policy(text, "dump.yaml")
    assert [r.id for r in again.spec.rules] == [1, 10001]
    assert dump_policy(again) == text
    assert again.spec.groups == policy.spec.groups
    assert sorted(again.spec.rules, key=lambda r: r.id) == sorted(policy.spec.rules, key=lambda r: r.id)
    assert "op: '!='" in text and "ports: [tcp/6379]" in text


_names = st.sampled_from(["nv.a.demo", "nv.b.demo", "lan", "nv.c.prod"])
_ports = st.lists(
    st.sampled_from(["tcp/80", "udp/53", "icmp", "tcp/8000-8100", "tcp/any"]),
    min_size=1,
    max_size=3,
    unique=True,
)
_apps = st.one_of(st.just(["any"]), st.lists(st.sampled_from(["http", "redis", "dns"]), min_size=1, unique=True))
_text = st.one_of(
    st.none(),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20),
    st.just("two\nlines\n"),
)


@st.composite
def _policies(draw: st.DrawFn) -> Policy:
    groups = [
        Group(
            name="nv.a.demo",
            criteria=[Criterion(key="service", op="=", value="a")],
            mode=draw(st.sampled_from([None, "discover", "monitor", "protect"])),
        ),
        Group(
            name="nv.b.demo",
            criteria=[Criterion(key="app", op="regex", value="^b(-.*)?$")],
            comment=draw(_text),
        ),
        Group(name="nv.c.prod", criteria=[Criterion(key="ns:team", op="!=", value="yes")]),
        Group(name="lan", criteria=[Criterion(key="address", op="=", value="10.0.0.0/8")]),
    ]
    ids = draw(st.lists(st.one_of(st.integers(1, 9999), st.integers(10001, 99999)), unique=True, max_size=6))
    rules = [
        Rule(
            id=i,
            name=draw(st.one_of(st.none(), st.just(f"rule-{i}"))),
            from_=draw(_names),
            to=draw(_names),
            ports=draw(_ports),
            applications=draw(_apps),
            action=draw(st.sampled_from(["allow", "deny"])),
            disabled=draw(st.booleans()),
            comment=draw(_text),
        )
        for i in sorted(ids)
    ]
    modes: list[Mode] = ["discover", "monitor", "protect"]
    mode = draw(st.sampled_from(modes))
    return Policy(metadata=Metadata(name="gen"), spec=PolicySpec(defaultMode=mode, groups=groups, rules=rules))


@settings(max_examples=60, deadline=None)
@given(_policies())
def test_round_trip_property(policy: Policy) -> None:
    """Any valid policy (rules in ID order) survives dump then parse unchanged."""
    assert parse_policy(dump_policy(policy), "gen.yaml") == policy


def test_load_policy_reads_file(tmp_path: Path) -> None:
    """load_policy reads UTF-8 files (with or without BOM) and locates faults by the file's path."""
    good = tmp_path / "good.yaml"
    good.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert load_policy(good).spec.rules[0].name == "web to redis"
    bad = tmp_path / "bad.yaml"
    bad.write_text(doc("rules: [{id: 0, from: external, to: containers}]"))
    with pytest.raises(InputError) as info:
        load_policy(bad)
    assert info.value.problems[0].location.file == str(bad)


LOAD_BAD: list[tuple[str, bytes | None, str]] = [
    ("missing", None, "No such file"),
    ("not-utf8", b"apiVersion: \xff\xfe\n", "not valid UTF-8"),
]


@pytest.mark.parametrize(("content", "message"), [c[1:] for c in LOAD_BAD], ids=[c[0] for c in LOAD_BAD])
def test_load_policy_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    """Unreadable or undecodable files raise InputError naming the file."""
    path = tmp_path / "p.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_policy(path)
    assert info.value.problems[0].location.file == str(path)
    assert message in info.value.problems[0].message


def test_alias_bomb_rejected() -> None:
    """Alias expansion is bounded, so a 'billion laughs' document is rejected, not expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join(['*a' + str(i - 1)] * 10)}]" for i in range(1, 7)]
    problems = problems_of("\n".join(lines) + "\n")
    assert any("too large" in p.message for p in problems)


def test_example_policy_validates() -> None:
    """examples/policy.yaml is a valid policy and decides a sample connection."""
    policy = load_policy(REPO / "examples" / "policy.yaml")
    assert policy.spec.rules
    verdict = PolicyEngine(policy).evaluate(obs(ext(), wl("web"), 443, "tls"))
    assert verdict.explanation.text
