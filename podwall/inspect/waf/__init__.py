"""The WAF inspector: ModSecurity v3 with Debian's OWASP CRS, podwall's own SQLi/XSS layer and custom sensors.

Entry point: `WafEngine` (engine.py). See docs/waf.md.
"""

from podwall.inspect.waf.engine import WafEngine, WafMatch, WafResult
from podwall.inspect.waf.flow import WafFlowInspector, waf_flow_inspector
from podwall.inspect.waf.http_request import HttpRequest, HttpResponse, HttpTransaction, from_events, parse_http

__all__ = [
    "HttpRequest",
    "HttpResponse",
    "HttpTransaction",
    "WafEngine",
    "WafFlowInspector",
    "WafMatch",
    "WafResult",
    "from_events",
    "parse_http",
    "waf_flow_inspector",
]
