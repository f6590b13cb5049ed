"""Bringing Debian's CRS 3.3.4 closer to CRS 4 with ModSecurity's own directives: rules removed, targets added.

CRS 4 deleted some 3.3.4 rules and widened what others inspect. podwall applies both after
loading the rule files (see crs.load_crs), so the rule text stays Debian's:

- `REMOVED_RULES`: rules CRS 4 no longer has (`SecRuleRemoveById`);
- `EXTRA_TARGETS`: variables CRS 4's version of a rule inspects that 3.3.4's does not
  (`SecRuleUpdateTargetById` / `SecRuleUpdateTargetByTag`): XML attribute values for every
  SQLi and XSS rule, the URL path for the XSS rules and a few SQLi ones, and the request
  headers CRS 4 added to individual SQLi rules;
- `EXCLUDED_TARGETS`: variables CRS 4's version excludes (`SecRuleUpdateTargetById` with `!VAR:/regex/`).

Narrowings of rules that CRS 4 kept but made stricter live in narrowing.py. Pure text.
"""

from __future__ import annotations

__all__ = ["EXCLUDED_TARGETS", "EXTRA_TARGETS", "EXTRA_TARGETS_BY_TAG", "REMOVED_RULES", "crs4_directives"]

# CRS 3.3.4 rules that CRS 4 deleted, and why.
REMOVED_RULES: dict[int, str] = {
    942110: "CRS 4 removed it: a value that merely starts or ends with a quote is not an injection",
}

# Every rule carrying the tag inspects these too (CRS 4 lists XML://@* beside XML:/*).
EXTRA_TARGETS_BY_TAG: dict[str, str] = {
    "attack-sqli": "XML://@*",
    "attack-xss": "XML://@*",
}

_XSS_ARGS_RULES = (
    941110, 941120, 941130, 941140, 941150, 941160, 941170, 941180, 941190, 941200, 941210, 941220, 941230,
    941240, 941250, 941260, 941270, 941280, 941290, 941300, 941310, 941320, 941330, 941340, 941350, 941360,
    941370, 941380,
)  # fmt: skip

# Per rule: the variables CRS 4's version adds (read from CRS 4's REQUEST-941/942 rule files).
EXTRA_TARGETS: dict[int, str] = {
    **{rule: "REQUEST_FILENAME" for rule in _XSS_ARGS_RULES if rule != 941110},  # 941110 has it already
    941100: "REQUEST_FILENAME",
    942101: "REQUEST_FILENAME",
    942120: "REQUEST_FILENAME",
    942160: "REQUEST_BASENAME",
    942200: "REQUEST_HEADERS:User-Agent|REQUEST_HEADERS:Referer",
    942370: "REQUEST_HEADERS:User-Agent|REQUEST_HEADERS:Referer",
    942500: "REQUEST_FILENAME",
}

# Per rule: the variables CRS 4's version no longer inspects (`!VAR:/regex/`): PHP-style array
# argument names (`a[b][]`, `a[b][c][]`) are not SQL for the special-character count 942431.
EXCLUDED_TARGETS: dict[int, str] = {
    942431: r"!ARGS_NAMES:/^[\w]+\[[\w\-]+\]\[[\w\-]*?\]$/|!ARGS_NAMES:/^[\w]+\[[\w\-]+\]\[[\w\-]+\]\[[\w\-]*?\]$/",
}


def crs4_directives() -> str:
    """The ModSecurity directives, loaded after the rule files, that apply the removals and extra targets."""
    lines = [f"SecRuleRemoveById {rule}" for rule in sorted(REMOVED_RULES)]
    lines += [f'SecRuleUpdateTargetByTag "{tag}" "{targets}"' for tag, targets in EXTRA_TARGETS_BY_TAG.items()]
    lines += [f'SecRuleUpdateTargetById {rule} "{targets}"' for rule, targets in sorted(EXTRA_TARGETS.items())]
    lines += [f'SecRuleUpdateTargetById {rule} "{targets}"' for rule, targets in sorted(EXCLUDED_TARGETS.items())]
    return "\n".join(lines) + "\n"
