"""A small shop for inspection tests: web, pay (DLP and optionally WAF on) and logs, as inventory and policy."""

from __future__ import annotations

INVENTORY = """\
apiVersion: podwall.io/v1
kind: Inventory
cluster: shop
namespaces: [{name: shop}]
workloads:
  - {name: web, namespace: shop, kind: Deployment, labels: {app: web}, pods: [{name: web-1, ips: [10.1.0.10]}]}
  - {name: pay, namespace: shop, kind: Deployment, labels: {app: pay}, pods: [{name: pay-1, ips: [10.1.0.20]}]}
  - {name: logs, namespace: shop, kind: Deployment, labels: {app: logs}, pods: [{name: logs-1, ips: [10.1.0.30]}]}
"""

_POLICY = """\
apiVersion: podwall.io/v1
kind: Policy
metadata: {name: shop}
spec:
  defaultMode: monitor
  groups:
    - name: nv.pay.shop
      criteria: [{key: service, op: '=', value: pay}, {key: namespace, op: '=', value: shop}]
      dlp: {status: true, settings: [{name: sensor.creditcard, action: %s}]}
%s    - name: nv.web.shop
      criteria: [{key: service, op: '=', value: web}, {key: namespace, op: '=', value: shop}]
    - name: nv.logs.shop
      criteria: [{key: service, op: '=', value: logs}, {key: namespace, op: '=', value: shop}]
  rules:
    - {id: 1, from: nv.web.shop, to: nv.pay.shop, ports: [tcp/8080], applications: [http]}
    - {id: 2, from: nv.web.shop, to: nv.logs.shop, ports: [tcp/8080], applications: [http]}
"""
_WAF = "      waf: {status: true, settings: [{name: crs, action: deny}]}\n"


def shop_policy(dlp_action: str = "deny", *, waf: bool = False) -> str:
    """The shop's policy text: DLP (cards) on pay with `dlp_action`, and the WAF on pay when `waf`."""
    return _POLICY % (dlp_action, _WAF if waf else "")
