"""NeuVector CR texts and helpers shared by the NeuVector import and export tests.

The CR texts below were written from the facts in docs/neuvector.md (NeuVector's documented
export shapes), not copied.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from podwall.core.errors import InputError, Problem
from podwall.policy.formats.neuvector import (
    parse_neuvector,
)
from podwall.policy.model import Policy, Rule


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
