"""NeuVector NvSecurityRule / NvClusterSecurityRule import: documented shapes, mappings, and
located errors with whole-file rejection.
"""

from __future__ import annotations

import pytest
import yaml

from podwall.policy.formats.neuvector import (
    NV_TO_APP,
    export_neuvector,
    parse_neuvector,
    read_neuvector,
)
from podwall.policy.model import SensorConfig, SensorSetting
from tests.unit.policy.neuvector_samples import (
    DOCS_EXPORT,
    GLOBAL_RULES,
    HAND_WRITTEN,
    WITH_SENSORS,
    canon,
    nv,
    problems_of,
    rules_by_name,
)

# --- import of documented shapes ---------------------------------------------------------------


def test_docs_export_groups() -> None:
    """The documented export becomes one group per target and selector, with modes and criteria mapped."""
    policy = parse_neuvector(DOCS_EXPORT, "export.yaml")
    groups = {g.name: g for g in policy.spec.groups}
    assert sorted(groups) == ["nv.api.shop", "nv.cache.shop", "nv.probe.shop", "nv.web.shop", "payments"]
    assert groups["nv.web.shop"].mode == "monitor"
    assert groups["nv.api.shop"].mode == "protect"
    assert groups["nv.cache.shop"].mode == "discover"
    assert groups["nv.probe.shop"].mode is None
    assert [str(c) for c in groups["nv.api.shop"].criteria] == ["service = api", "namespace = shop"]
    assert groups["payments"].is_address_group
    assert policy.metadata.name == "export"


def test_docs_export_rules() -> None:
    """Ingress rules run from the selector to the target, egress rules from the target to the selector."""
    rules = rules_by_name(parse_neuvector(DOCS_EXPORT))
    ingress = rules["nv.web.shop-ingress-0"]
    assert (ingress.from_, ingress.to, ingress.applications) == ("nv.probe.shop", "nv.web.shop", ["http"])
    egress = rules["nv.cache.shop-egress-2"]
    assert (egress.from_, egress.to, egress.ports, egress.applications) == (
        "nv.api.shop",
        "nv.cache.shop",
        ["tcp/6379"],
        ["redis"],
    )
    assert rules["payments-egress-1"].applications == ["tls"]


def test_rule_ids_are_policy_as_code_in_reading_order() -> None:
    """Imported rules take policy-as-code IDs from 110001, per document ingress before egress."""
    policy = parse_neuvector(DOCS_EXPORT)
    assert [(r.id, r.origin) for r in policy.spec.rules][:2] == [(110001, "policy-as-code"), (110002, "policy-as-code")]
    assert [r.name for r in policy.spec.rules] == [
        "nv.web.shop-ingress-0",
        "nv.api.shop-egress-0",
        "payments-egress-1",
        "nv.cache.shop-egress-2",
    ]


def test_global_rules_use_reserved_groups() -> None:
    """`containers` and `external` are podwall's reserved groups: not defined, used by the rules."""
    imported = read_neuvector(GLOBAL_RULES, "global.yaml")
    policy = imported.policy
    assert [g.name for g in policy.spec.groups] == ["nv.alpine.default"]
    rules = rules_by_name(policy)
    assert (rules["containers-ingress-0"].from_, rules["containers-ingress-0"].to) == ("external", "containers")
    assert rules["containers-ingress-0"].action == "deny"
    assert (rules["external-egress-0"].from_, rules["external-egress-0"].to) == ("nv.alpine.default", "external")
    assert imported.extras["containers"].process == ({"action": "deny", "name": "ssh", "path": "/bin/ssh"},)
    assert imported.extras["nv.alpine.default"].file[0]["filter"] == "/tmp/passwd.txt"


def test_hand_written_single_document() -> None:
    """A lone CR document with a custom selector group and an unusual port reads as written."""
    policy = parse_neuvector(HAND_WRITTEN)
    rule = policy.spec.rules[0]
    assert (rule.name, rule.from_, rule.to, rule.ports, rule.applications) == (
        "ingress",
        "from-demo",
        "nv.nginx-pod.ns1",
        ["tcp/65535"],
        ["tls"],
    )
    assert [str(c) for c in policy.group("from-demo").criteria] == ["namespace = demo"]  # type: ignore[union-attr]


def test_sensors_priority_and_labels() -> None:
    """dlp/waf blocks, priorities, comments and `label: k=v` criteria are kept."""
    imported = read_neuvector(WITH_SENSORS)
    policy = imported.policy
    target = policy.group("nv.httpd.sample1")
    assert target is not None
    assert target.dlp == SensorConfig(status=True, settings=[SensorSetting(name="sensor.creditcard", action="deny")])
    assert target.waf == SensorConfig(status=False, settings=[])
    assert target.comment == "web server"
    ip_group = policy.group("nv.ip.httpd.sample1")
    assert ip_group is not None
    assert [str(c) for c in ip_group.criteria] == ["namespace = sample1", "deployment = httpd"]
    rules = rules_by_name(policy)
    assert rules["nv.ip.httpd.sample1-egress-0"].priority == 0
    assert rules["nv.ip.dns-default.openshift-dns-egress-1"].priority == 5
    assert rules["nv.ip.dns-default.openshift-dns-egress-1"].ports == ["udp/53", "tcp/53"]
    assert imported.extras["nv.httpd.sample1"].process_profile == {"baseline": "zero-drift"}


def test_single_items_list_and_typed_list_kinds() -> None:
    """`NvSecurityRuleList` wrappers and several `---` documents read like a `kind: List`."""
    items = yaml.safe_load(DOCS_EXPORT.replace("op: =", "op: '='"))["items"]
    typed = yaml.safe_dump({"apiVersion": "neuvector.com/v1", "kind": "NvSecurityRuleList", "items": items})
    split = "---\n".join(yaml.safe_dump(item) for item in items)
    expected = canon(parse_neuvector(DOCS_EXPORT))
    assert canon(parse_neuvector(typed)) == expected
    assert canon(parse_neuvector(split)) == expected


def test_other_kubernetes_objects_are_skipped() -> None:
    """Non-NeuVector objects in the same file (a Deployment) are not policy and are skipped."""
    text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n---\n" + HAND_WRITTEN
    assert len(parse_neuvector(text).spec.rules) == 1


# --- mappings --------------------------------------------------------------------------------------


def one_rule(ports: str = "any", apps: str = "[HTTP]") -> str:
    return nv(
        f"""
        apiVersion: neuvector.com/v1
        kind: NvClusterSecurityRule
        metadata: {{name: t}}
        spec:
          target:
            selector:
              name: web
              criteria: [{{key: app, op: "=", value: web}}]
          ingress:
          - name: r
            action: allow
            ports: "{ports}"
            applications: {apps}
            selector: {{name: external, criteria: []}}
        """
    )


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        ("any", ["any"]),
        ("", ["any"]),
        ("tcp/80", ["tcp/80"]),
        ("TCP/80", ["tcp/80"]),
        ("udp/53,tcp/53", ["udp/53", "tcp/53"]),
        ("tcp/8000-8100", ["tcp/8000-8100"]),
        ("tcp/8100-8000", ["tcp/8000-8100"]),
        ("tcp/any", ["tcp/any"]),
        ("tcp/0-65535", ["tcp/any"]),
        ("icmp", ["icmp"]),
        ("80", ["tcp/80", "udp/80"]),
        ("tcp/80,any", ["any"]),
    ],
    ids=[
        "any",
        "empty",
        "tcp",
        "upper",
        "list",
        "range",
        "reversed",
        "tcp-any",
        "full-range",
        "icmp",
        "bare",
        "any-wins",
    ],
)
def test_ports(ports: str, expected: list[str]) -> None:
    """NeuVector port strings become podwall port entries."""
    assert parse_neuvector(one_rule(ports=ports)).spec.rules[0].ports == expected


@pytest.mark.parametrize(
    ("apps", "expected"),
    [
        ("[HTTP]", ["http"]),
        ("[SSL]", ["tls"]),
        ("[GRPC, PostgreSQL]", ["grpc", "postgresql"]),
        ("[RabbitMQ]", ["amqp"]),
        ("[redis, MYSQL]", ["redis", "mysql"]),
        ("[http2]", ["http2"]),
        ("[]", ["any"]),
        ("null", ["any"]),
        ("[any]", ["any"]),
    ],
    ids=["http", "ssl", "grpc-pg", "rabbitmq", "case", "podwall-name", "empty", "null", "any"],
)
def test_applications(apps: str, expected: list[str]) -> None:
    """NeuVector application names map to podwall's DPI names, case-insensitively."""
    assert parse_neuvector(one_rule(apps=apps)).spec.rules[0].applications == expected


def test_every_mapped_application_round_trips() -> None:
    """Each NeuVector name podwall maps is written back with NeuVector's spelling."""
    names = sorted(NV_TO_APP)
    text = one_rule(apps="[" + ", ".join(names) + "]")
    policy = parse_neuvector(text)
    out = yaml.safe_load(export_neuvector(policy))
    written = next(r for item in out["items"] for r in item["spec"]["ingress"] + item["spec"]["egress"])
    assert sorted(a.lower() for a in written["applications"]) == names


def group_text(criteria: str) -> str:
    return nv(
        f"""
        apiVersion: neuvector.com/v1
        kind: NvClusterSecurityRule
        metadata: {{name: t}}
        spec:
          target:
            selector:
              name: g
              criteria: {criteria}
        """
    )


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        (
            '[{key: service, op: "=", value: redis.demo}, {key: domain, op: "=", value: demo}]',
            ["service = redis", "namespace = demo"],
        ),
        ('[{key: service, op: "=", value: redis.demo}]', ["service = redis", "namespace = demo"]),
        ('[{key: service, op: "=", value: "redis.*"}]', ["service = redis"]),
        (
            '[{key: service, op: "!=", value: "redis.*"}, {key: namespace, op: "=", value: a}]',
            ["service != redis", "namespace = a"],
        ),
        ("[{key: service, op: prefix, value: web}]", ["service prefix web"]),
        ('[{key: service, op: "=", value: "web*"}]', ["service = web*"]),
        (
            '[{key: image, op: contains, value: redis}, {key: node, op: "=", value: n1}]',
            ["image contains redis", "node = n1"],
        ),
        ('[{key: label, op: "=", value: "app=web"}]', ["app = web"]),
        ('[{key: app, op: regex, value: "^web"}]', ["app regex ^web"]),
        ('[{key: address, op: "=", value: 10.0.0.0/8}]', ["address = 10.0.0.0/8"]),
    ],
    ids=[
        "svc-ns",
        "lone-svc",
        "svc-any-ns",
        "svc-not",
        "prefix",
        "glob",
        "image-node",
        "label-kv",
        "label-key",
        "address",
    ],
)
def test_criteria(criteria: str, expected: list[str]) -> None:
    """NeuVector criteria become podwall criteria (domain -> namespace, service without its namespace)."""
    group = parse_neuvector(group_text(criteria)).group("g")
    assert group is not None
    assert [str(c) for c in group.criteria] == expected


# --- located errors ----------------------------------------------------------------------------------


BAD_CASES: list[tuple[str, str, str, str]] = [
    # (text, expected path, expected object, message fragment)
    (one_rule(ports="tcp/99999"), "spec.ingress[0].ports", "NvClusterSecurityRule t", "invalid port"),
    (one_rule(ports="ip:47"), "spec.ingress[0].ports", "NvClusterSecurityRule t", "other IP protocols"),
    (one_rule(ports="sctp/80"), "spec.ingress[0].ports", "NvClusterSecurityRule t", "unknown transport"),
    (one_rule(apps="[Couchbase]"), "spec.ingress[0].applications[0]", "NvClusterSecurityRule t", "never match"),
    (one_rule(apps="[Gopher]"), "spec.ingress[0].applications[0]", "NvClusterSecurityRule t", "unknown application"),
    (one_rule().replace("action: allow", "action: permit"), "spec.ingress[0].action", "", "allow or deny"),
    (one_rule().replace("- name: r\n", "- \n"), "spec.ingress[0].name", "", "required"),
    (one_rule().replace("ports:", "portz:"), "spec.ingress[0].portz", "", "unknown field"),
    (group_text('[{key: container, op: "=", value: web}]'), "spec.target.selector.criteria[0].key", "", "container"),
    (group_text('[{key: app, op: "~", value: web}]'), "spec.target.selector.criteria[0].op", "", "operator"),
    (group_text('[{key: app, op: regex, value: "("}]'), "spec.target.selector.criteria[0].value", "", "regular"),
    (group_text('[{key: label, op: "=", value: web}]'), "spec.target.selector.criteria[0].value", "", "key=value"),
    (group_text("[]"), "spec.target.selector.criteria", "", "needs criteria"),
    (
        group_text('[{key: app, op: "=", value: w}]').replace("name: g", "name: 'bad name'"),
        "spec.target.selector.name",
        "",
        "invalid group name",
    ),
    (
        group_text('[{key: app, op: "=", value: w}]').replace("    selector:", "    policymode: Learn\n    selector:"),
        "spec.target.policymode",
        "",
        "Discover, Monitor or Protect",
    ),
    (
        group_text('[{key: address, op: "=", value: 1.2.3.4}]').replace(
            "    selector:", "    policymode: Protect\n    selector:"
        ),
        "spec.target.policymode",
        "",
        "no policy mode",
    ),
    (HAND_WRITTEN.replace("value: ns1\n", "value: other\n"), "spec.target.selector.criteria", "", "domain = ns1"),
    (HAND_WRITTEN.replace("namespace: ns1\n", ""), "metadata.namespace", "", "namespaced"),
    (HAND_WRITTEN.replace("neuvector.com/v1", "neuvector.com/v2"), "apiVersion", "", "unsupported apiVersion"),
    (HAND_WRITTEN.replace("kind: NvSecurityRule", "kind: NvDlpSecurityRule"), "kind", "", "unsupported kind"),
    (
        GLOBAL_RULES.replace("  spec:\n    egress: []", "  spec:\n    dlp: {status: true}\n    egress: []", 1),
        "spec.dlp",
        "",
        "cannot have DLP",
    ),
]


@pytest.mark.parametrize(
    ("text", "path", "obj", "fragment"),
    BAD_CASES,
    ids=[
        "port-range",
        "ip-proto",
        "transport",
        "nv-only-app",
        "unknown-app",
        "action",
        "no-name",
        "unknown-field",
        "container-key",
        "operator",
        "bad-regex",
        "label-format",
        "no-criteria",
        "group-name",
        "mode-value",
        "address-mode",
        "target-namespace",
        "missing-namespace",
        "api-version",
        "kind",
        "reserved-dlp",
    ],
)
def test_located_errors(text: str, path: str, obj: str, fragment: str) -> None:
    """A bad input raises InputError whose problem names the file, document, object and field path."""
    problems = problems_of(text, "bad.yaml")
    hits = [p for p in problems if p.location.path is not None and p.location.path.endswith(path)]
    assert hits, f"no problem at {path}: {[str(p) for p in problems]}"
    assert any(fragment in p.message for p in hits), [str(p) for p in hits]
    assert all(p.location.file == "bad.yaml" and p.location.document == 0 for p in hits)
    if obj:
        assert hits[0].location.obj == obj


def test_located_in_list_items() -> None:
    """A fault in a List item is located by the item's index and the CR's name."""
    text = DOCS_EXPORT.replace("ports: tcp/6379", "ports: tcp/0")
    problems = problems_of(text)
    assert [(p.location.obj, p.location.path) for p in problems] == [
        ("NvSecurityRule shop/nv.api.shop", "items[1].spec.egress[1].ports")
    ]


def test_yaml_syntax_error_is_located() -> None:
    """Malformed YAML is reported with its document, line and column."""
    problems = problems_of(HAND_WRITTEN + "---\nspec: [unclosed\n")
    assert problems[0].location.document == 1
    assert "line" in problems[0].message


def test_duplicate_key_rejected() -> None:
    """A mapping with the same key twice is an error, not a silent overwrite."""
    assert "duplicate key" in problems_of(HAND_WRITTEN.replace("  name: ns1crd\n", "  name: a\n  name: b\n"))[0].message


def test_duplicate_rule_name_in_one_cr() -> None:
    """Two rules of one CR with the same name are rejected, as NeuVector does."""
    text = DOCS_EXPORT.replace("name: payments-egress-1", "name: nv.cache.shop-egress-2")
    assert any("duplicate rule name" in p.message for p in problems_of(text))


def test_conflicting_group_definitions() -> None:
    """The same group name with other criteria in another CR is rejected."""
    text = DOCS_EXPORT.replace("value: cache.shop", "value: other.shop", 1)
    assert any("other criteria" in p.message for p in problems_of(text))


def test_no_neuvector_object() -> None:
    """A file without any NvSecurityRule is an error, not an empty policy."""
    problems = problems_of("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert "no NvSecurityRule" in problems[0].message


def test_whole_file_rejected_and_every_fault_listed() -> None:
    """One bad CR among good ones rejects the file, and faults in different CRs are all reported."""
    text = DOCS_EXPORT.replace("ports: tcp/6379", "ports: tcp/0").replace(
        "- HTTP\n      name: nv.web", "- Gopher\n      name: nv.web"
    )
    problems = problems_of(text)
    assert {p.location.path for p in problems} == {
        "items[0].spec.ingress[0].applications[0]",
        "items[1].spec.egress[1].ports",
    }


def test_repeated_rule_name_across_crs_is_qualified() -> None:
    """Rule names repeated in different CRs (allowed by NeuVector) are qualified with the CR's name."""
    text = HAND_WRITTEN + "---\n" + HAND_WRITTEN.replace("name: ns1crd", "name: other")
    names = [r.name for r in parse_neuvector(text).spec.rules]
    assert names == ["ingress", "other/ingress"]
