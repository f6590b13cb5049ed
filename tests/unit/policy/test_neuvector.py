"""NeuVector NvSecurityRule / NvClusterSecurityRule import and export: documented shapes, mappings,
located errors with whole-file rejection, and the round trips (export -> import, import -> export -> import).

The CR texts below were written from the facts in docs/neuvector.md (NeuVector's documented
export shapes), not copied.
"""

from __future__ import annotations

import textwrap
from typing import Any, cast

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from podwall.core.errors import InputError, Problem
from podwall.policy.formats.neuvector import (
    NV_TO_APP,
    TargetExtras,
    export_neuvector,
    parse_neuvector,
    read_neuvector,
)
from podwall.policy.model import Criterion, Group, Metadata, Mode, Policy, PolicySpec, Rule, SensorConfig, SensorSetting


def nv(text: str) -> str:
    return textwrap.dedent(text).strip("\n") + "\n"


# The shape of NeuVector's "Export Group Policy" (a kind: List, `op: =` unquoted, null sections).
DOCS_EXPORT = nv(
    """
    apiVersion: v1
    items:
    - apiVersion: neuvector.com/v1
      kind: NvSecurityRule
      metadata:
        name: nv.web.shop
        namespace: shop
      spec:
        egress:
        - selector:
            criteria:
            - key: service
              op: =
              value: api.shop
            - key: domain
              op: =
              value: shop
            name: nv.api.shop
          action: allow
          applications:
          - HTTP
          name: nv.api.shop-egress-0
          ports: any
        file: []
        ingress:
        - selector:
            criteria:
            - key: service
              op: =
              value: probe.shop
            - key: domain
              op: =
              value: shop
            name: nv.probe.shop
          action: allow
          applications:
          - HTTP
          name: nv.web.shop-ingress-0
          ports: any
        process:
        - action: allow
          name: nginx
          path: /usr/sbin/nginx
        target:
          selector:
            criteria:
            - key: service
              op: =
              value: web.shop
            - key: domain
              op: =
              value: shop
            name: nv.web.shop
          policymode: Monitor
    - apiVersion: neuvector.com/v1
      kind: NvSecurityRule
      metadata:
        name: nv.api.shop
        namespace: shop
      spec:
        egress:
        - selector:
            criteria:
            - key: address
              op: =
              value: payments.example.com
            name: payments
          action: allow
          applications:
          - SSL
          name: payments-egress-1
          ports: any
        - selector:
            criteria:
            - key: service
              op: =
              value: cache.shop
            - key: domain
              op: =
              value: shop
            name: nv.cache.shop
          action: allow
          applications:
          - Redis
          name: nv.cache.shop-egress-2
          ports: tcp/6379
        file: []
        ingress: []
        process: []
        target:
          selector:
            criteria:
            - key: service
              op: =
              value: api.shop
            - key: domain
              op: =
              value: shop
            name: nv.api.shop
          policymode: Protect
    - apiVersion: neuvector.com/v1
      kind: NvSecurityRule
      metadata:
        name: nv.cache.shop
        namespace: shop
      spec:
        egress: null
        file: null
        ingress: null
        process: null
        target:
          selector:
            criteria:
            - key: service
              op: =
              value: cache.shop
            - key: domain
              op: =
              value: shop
            name: nv.cache.shop
          policymode: Discover
    kind: List
    metadata: null
    """
)

# Global rules as NeuVector documents them: the reserved `containers` target (criteria
# container=*, policymode null) and a learned service in Protect mode, with process rules.
GLOBAL_RULES = nv(
    """
    apiVersion: v1
    kind: List
    metadata: null
    items:
    - apiVersion: neuvector.com/v1
      kind: NvClusterSecurityRule
      metadata: {name: containers, namespace: default}
      spec:
        egress: []
        file: []
        ingress:
        - selector: {criteria: [], name: external}
          action: deny
          applications: [SSH]
          name: containers-ingress-0
          ports: tcp/22
        process:
        - {action: deny, name: ssh, path: /bin/ssh}
        target:
          selector:
            criteria: [{key: container, op: "=", value: "*"}]
            name: containers
          policymode: null
    - apiVersion: neuvector.com/v1
      kind: NvSecurityRule
      metadata: {name: nv.alpine.default, namespace: default}
      spec:
        egress:
        - selector: {criteria: [], name: external}
          action: deny
          applications: [HTTP]
          name: external-egress-0
          ports: tcp/80
        file:
        - {app: [chmod], behavior: block_access, filter: /tmp/passwd.txt, recursive: false}
        ingress: []
        process:
        - {action: deny, name: scp, path: /bin/scp}
        target:
          selector:
            criteria:
            - {key: service, op: "=", value: alpine.default}
            - {key: domain, op: "=", value: default}
            name: nv.alpine.default
          policymode: Protect
    """
)

# A hand-written CR (the RBAC example's shape): one document, a custom ingress selector group.
HAND_WRITTEN = nv(
    """
    apiVersion: neuvector.com/v1
    kind: NvSecurityRule
    metadata:
      name: ns1crd
      namespace: ns1
    spec:
      target:
        selector:
          name: nv.nginx-pod.ns1
          criteria:
          - key: service
            value: nginx-pod.ns1
            op: "="
          - key: domain
            value: ns1
            op: "="
      ingress:
        -
          selector:
            name: from-demo
            criteria:
            - key: domain
              value: demo
              op: "="
          ports: "tcp/65535"
          applications:
            - SSL
          action:  allow
          name:    ingress
    """
)

# A newer export's extras: dlp/waf blocks, priority, comments, original_name, nv.ip label criteria.
WITH_SENSORS = nv(
    """
    apiVersion: v1
    kind: List
    items:
    - apiVersion: neuvector.com/v1
      kind: NvSecurityRule
      metadata: {name: nv.httpd.sample1, namespace: sample1}
      spec:
        dlp:
          settings: [{name: sensor.creditcard, action: deny}]
          status: true
        waf:
          settings: []
          status: false
        egress:
        - action: allow
          applications: [HTTP, SSL]
          name: nv.ip.httpd.sample1-egress-0
          ports: any
          priority: 0
          selector:
            comment: ""
            criteria:
            - {key: domain, op: "=", value: sample1}
            - {key: label, op: "=", value: deployment=httpd}
            name: nv.ip.httpd.sample1
            original_name: ""
        - action: allow
          applications: [DNS]
          name: nv.ip.dns-default.openshift-dns-egress-1
          ports: udp/53,tcp/53
          priority: 5
          selector:
            comment: ""
            criteria: [{key: domain, op: "=", value: openshift-dns}]
            name: nv.ip.dns-default.openshift-dns
            original_name: ""
        ingress: []
        process: []
        file: []
        process_profile: {baseline: zero-drift}
        target:
          policymode: Protect
          selector:
            comment: "web server"
            criteria:
            - {key: service, op: "=", value: httpd.sample1}
            - {key: domain, op: "=", value: sample1}
            name: nv.httpd.sample1
            original_name: ""
    """
)


def rules_by_name(policy: Policy) -> dict[str, Rule]:
    return {r.name: r for r in policy.spec.rules if r.name is not None}


def problems_of(text: str, filename: str = "nv.yaml") -> list[Problem]:
    with pytest.raises(InputError) as info:
        parse_neuvector(text, filename)
    return info.value.problems


def canon(policy: Policy) -> dict[str, Any]:
    """The policy up to what the round trip does not keep: rule IDs, origins, order, name, default mode."""
    groups = sorted(
        (g.model_dump(mode="json", exclude_none=True) for g in policy.spec.groups), key=lambda g: str(g["name"])
    )
    rules = sorted(
        (
            (r.name, r.from_, r.to, tuple(r.ports), tuple(r.applications), r.action, r.priority)
            for r in policy.spec.rules
            if not r.disabled
        ),
        key=repr,
    )
    return {"groups": groups, "rules": rules}


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


# --- export ---------------------------------------------------------------------------------------


def crit(key: str, op: str, value: str) -> Criterion:
    return Criterion(key=key, op=op, value=value)  # type: ignore[arg-type]


def sample_policy() -> Policy:
    groups = [
        Group(
            name="nv.web.shop",
            mode="monitor",
            criteria=[crit("service", "=", "web"), crit("namespace", "=", "shop")],
            dlp=SensorConfig(status=True, settings=[SensorSetting(name="sensor.ssn", action="deny")]),
            waf=SensorConfig(status=False, settings=[SensorSetting(name="sensor.sqli", action="allow")]),
            comment="front end",
        ),
        Group(
            name="nv.api.shop", mode="protect", criteria=[crit("service", "=", "api"), crit("namespace", "=", "shop")]
        ),
        Group(name="nv.db.shop", criteria=[crit("service", "=", "db"), crit("namespace", "=", "shop")]),
        Group(name="admins", criteria=[crit("app", "prefix", "admin"), crit("namespace", "!=", "kube-system")]),
        Group(
            name="web-any-ns",
            mode="discover",
            criteria=[crit("service", "=", "web"), crit("image", "contains", "nginx")],
        ),
        Group(
            name="partners", criteria=[crit("address", "=", "203.0.113.0/24"), crit("address", "=", "*.example.com")]
        ),
    ]
    rules = [
        Rule(id=1, name="web to api", from_="nv.web.shop", to="nv.api.shop", ports=["tcp/8080"], applications=["http"]),
        Rule(
            id=2,
            name="api to db",
            from_="nv.api.shop",
            to="nv.db.shop",
            ports=["tcp/5432"],
            applications=["postgresql"],
        ),
        Rule(id=3, name="partners in", from_="partners", to="nv.api.shop", ports=["tcp/443"], applications=["tls"]),
        Rule(id=4, name="internet in", from_="external", to="nv.web.shop", ports=["tcp/80", "tcp/443"]),
        Rule(
            id=5, name="no ssh", from_="admins", to="containers", ports=["tcp/22"], applications=["ssh"], action="deny"
        ),
        Rule(id=10001, name="dns", from_="containers", to="nodes", ports=["udp/53", "tcp/53"], applications=["dns"]),
        Rule(
            id=110001,
            name="pac",
            from_="web-any-ns",
            to="external",
            ports=["icmp"],
            priority=7,
            origin="policy-as-code",
        ),
    ]
    return Policy(metadata=Metadata(name="shop"), spec=PolicySpec(groups=groups, rules=rules))


def test_export_then_import_is_the_same_policy() -> None:
    """Export -> import gives the same groups, criteria, modes, DLP/WAF and rule set (IDs aside)."""
    policy = sample_policy()
    again = parse_neuvector(export_neuvector(policy))
    assert canon(again) == canon(policy)
    assert {r.origin for r in again.spec.rules} == {"policy-as-code"}


def test_export_then_import_cluster_scoped() -> None:
    """With cluster_scoped every CR is an NvClusterSecurityRule, and the round trip still holds."""
    text = export_neuvector(sample_policy(), cluster_scoped=True)
    kinds = {item["kind"] for item in yaml.safe_load(text)["items"]}
    assert kinds == {"NvClusterSecurityRule"}
    assert canon(parse_neuvector(text)) == canon(sample_policy())


@pytest.mark.parametrize(
    "source", [DOCS_EXPORT, GLOBAL_RULES, HAND_WRITTEN, WITH_SENSORS], ids=["docs", "global", "hand", "sensors"]
)
def test_import_export_import_fixed_point(source: str) -> None:
    """Import -> export -> import gives the same policy and extras; a second export is the same text."""
    first = read_neuvector(source)
    text = export_neuvector(first.policy, extras=first.extras)
    second = read_neuvector(text)
    assert canon(second.policy) == canon(first.policy)
    assert dict(second.extras) == dict(first.extras)
    assert export_neuvector(second.policy, extras=second.extras) == text


def test_export_shape() -> None:
    """The export is a kind: List of one CR per group with NeuVector's field names and spellings."""
    out = yaml.safe_load(export_neuvector(sample_policy()))
    assert (out["apiVersion"], out["kind"]) == ("v1", "List")
    items = {item["metadata"]["name"]: item for item in out["items"]}
    web = items["nv.web.shop"]
    assert (web["kind"], web["metadata"]["namespace"]) == ("NvSecurityRule", "shop")
    assert web["spec"]["target"]["policymode"] == "Monitor"
    assert web["spec"]["target"]["selector"]["criteria"] == [
        {"key": "service", "op": "=", "value": "web.shop"},
        {"key": "domain", "op": "=", "value": "shop"},
    ]
    assert web["spec"]["dlp"] == {"status": True, "settings": [{"name": "sensor.ssn", "action": "deny"}]}
    egress = web["spec"]["egress"][0]
    assert (egress["name"], egress["applications"], egress["ports"]) == ("web to api", ["HTTP"], "tcp/8080")
    assert items["web-any-ns"]["kind"] == "NvClusterSecurityRule"
    assert items["web-any-ns"]["spec"]["target"]["selector"]["criteria"][0]["value"] == "web.*"
    assert items["web-any-ns"]["spec"]["egress"][0]["priority"] == 7
    assert items["nv.api.shop"]["spec"]["ingress"][0]["selector"]["name"] == "partners"
    assert items["nv.web.shop"]["spec"]["ingress"][0]["selector"] == {"name": "external", "criteria": []}
    nodes = items["nodes"]["spec"]
    assert items["nodes"]["kind"] == "NvClusterSecurityRule"
    assert nodes["target"]["selector"] == {"name": "nodes", "criteria": []}
    assert nodes["ingress"][0]["selector"] == {
        "name": "containers",
        "criteria": [{"key": "container", "op": "=", "value": "*"}],
    }


def test_unnamed_rules_get_neuvector_style_names() -> None:
    """Rules without a name are written as <group>-<direction>-<n>, and then keep that name."""
    policy = sample_policy()
    rules = [r.model_copy(update={"name": None}) if r.id == 2 else r for r in policy.spec.rules]
    unnamed = Policy(metadata=policy.metadata, spec=policy.spec.model_copy(update={"rules": rules}))
    again = parse_neuvector(export_neuvector(unnamed))
    names = {r.name for r in again.spec.rules if (r.from_, r.to) == ("nv.api.shop", "nv.db.shop")}
    assert names == {"nv.api.shop-egress-0"}


def test_disabled_rules_are_left_out() -> None:
    """A disabled rule is not exported: the CRD cannot say disabled, and leaving it out keeps the meaning."""
    policy = sample_policy()
    rules = [r.model_copy(update={"disabled": True}) if r.id == 1 else r for r in policy.spec.rules]
    text = export_neuvector(Policy(metadata=policy.metadata, spec=policy.spec.model_copy(update={"rules": rules})))
    assert "web to api" not in text
    assert len(parse_neuvector(text).spec.rules) == len(rules) - 1


def test_inexpressible_policy_is_rejected() -> None:
    """Zones, L7 matchers and staged rules cannot be written as CRDs: every one is reported."""
    base = sample_policy()
    policy = Policy.model_validate(
        {
            "metadata": {"name": "x"},
            "spec": {
                "groups": [g.model_dump(by_alias=True, exclude_none=True) for g in base.spec.groups]
                + [{"name": "zone.cde", "members": ["nv.db.shop"]}],
                "rules": [
                    {"id": 1, "from": "nv.web.shop", "to": "zone.cde"},
                    {
                        "id": 2,
                        "from": "nv.web.shop",
                        "to": "nv.api.shop",
                        "applications": ["http"],
                        "l7": {"http": {"methods": ["GET"]}},
                    },
                    {"id": 3, "from": "nv.web.shop", "to": "nv.db.shop", "staged": True},
                ],
            },
        }
    )
    with pytest.raises(InputError) as info:
        export_neuvector(policy)
    messages = " | ".join(p.message for p in info.value.problems)
    assert "no zones" in messages and "L7" in messages and "staged" in messages


def test_nodes_mode_is_carried_as_extra() -> None:
    """The `nodes` policymode (process rules only in NeuVector) is kept aside and written back."""
    text = GLOBAL_RULES.replace("name: containers\n      policymode: null", "name: nodes\n      policymode: Protect")
    text = text.replace("name: containers, namespace", "name: nodes, namespace").replace(
        "name: containers-ingress-0", "name: nodes-in"
    )
    imported = read_neuvector(text)
    assert imported.extras["nodes"] == TargetExtras(
        process=({"action": "deny", "name": "ssh", "path": "/bin/ssh"},), nodes_mode="Protect"
    )
    out = yaml.safe_load(export_neuvector(imported.policy, extras=imported.extras))
    nodes = next(i for i in out["items"] if i["metadata"]["name"] == "nodes")
    assert nodes["spec"]["target"]["policymode"] == "Protect"


# --- property: random policies survive export -> import ------------------------------------------

_LABELS = st.sampled_from(["app", "tier", "team"])
_VALUES = st.sampled_from(["web", "api", "db", "a.b", "x*"])
_OPS = st.sampled_from(["=", "!=", "prefix", "contains", "regex"])


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    n = draw(st.integers(1, 4))
    groups: list[Group] = []
    for i in range(n):
        criteria = [crit(draw(_LABELS), draw(_OPS), draw(_VALUES)) for _ in range(draw(st.integers(0, 2)))]
        if draw(st.booleans()):
            criteria.append(crit("service", draw(st.sampled_from(["=", "!="])), draw(_VALUES)))
        namespaces = draw(st.lists(st.sampled_from(["shop", "ops", "q*"]), max_size=2, unique=True))
        criteria += [crit("namespace", "=", ns) for ns in namespaces]
        if not criteria:
            criteria = [crit("app", "=", f"g{i}")]
        mode = cast(Mode | None, draw(st.sampled_from([None, "discover", "monitor", "protect"])))
        groups.append(Group(name=f"g{i}", criteria=criteria, mode=mode))
    names = [g.name for g in groups] + ["external", "containers"]
    rules = []
    for k in range(draw(st.integers(0, 6))):
        rules.append(
            Rule(
                id=k + 1,
                name=f"r{k}",
                from_=draw(st.sampled_from(names)),
                to=draw(st.sampled_from(names)),
                ports=draw(st.sampled_from([["any"], ["tcp/80"], ["udp/53", "tcp/53"], ["icmp"], ["tcp/1-1024"]])),
                applications=draw(st.sampled_from([["any"], ["http"], ["tls", "grpc"], ["amqp"], ["mqtt"]])),
                action=draw(st.sampled_from(["allow", "deny"])),
            )
        )
    return Policy(metadata=Metadata(name="p"), spec=PolicySpec(groups=groups, rules=rules))


@settings(max_examples=60, deadline=None)
@given(policies())
def test_round_trip_property(policy: Policy) -> None:
    """Any policy of groups, modes and plain rules comes back the same after export -> import."""
    assert canon(parse_neuvector(export_neuvector(policy))) == canon(policy)
