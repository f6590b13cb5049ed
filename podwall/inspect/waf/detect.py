"""podwall's own detection layer on top of the CRS: libinjection and generic signatures on decoded values.

Debian ships CRS 3.3.4, which misses attacks newer rule sets catch (SQL in the URL path, in
XML attributes, in arbitrary headers, JSON operators in SQL, JavaScript-only XSS). This layer
runs libinjection's SQLi and XSS tokenizers and podwall's signatures (signatures.py, one
hyperscan database compiled once) over every target of a request (targets.py) in each of its
decoded forms, and podwall's SQL-fragment grammar (sqlshape.py) over the fully decoded form.
libinjection's SQLi verdicts pass podwall's allow-list (libinjection_allow.py) first.

Each hit is an `OwnHit` with an id in podwall's range: `waf.podwall.sqli.libinjection`,
`waf.podwall.xss.libinjection`, `waf.podwall.<category>.<signature>`,
`waf.podwall.sqli.<shape>` (`string-break`, `json-operator`, `stacked-statement`,
`type-cast`). Pure: values in, hits out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import hyperscan
import libinjection

from podwall.inspect.waf.http_request import HttpRequest
from podwall.inspect.waf.libinjection_allow import libinjection_benign
from podwall.inspect.waf.signatures import SIGNATURES, Signature
from podwall.inspect.waf.sqlshape import sql_shapes
from podwall.inspect.waf.targets import Target, decodings, request_targets

__all__ = ["OwnDetector", "OwnHit"]

LIBINJECTION_SQLI = "libinjection"
MATCH_CONTEXT = 120
_SHAPE_MESSAGES = {
    "string-break": "value closes an SQL string and continues as SQL",
    "json-operator": "SQL JSON operator on a JSON literal",
    "stacked-statement": "stacked SQL statement",
    "type-cast": "SQL type cast",
}


@dataclass(frozen=True, slots=True)
class OwnHit:
    """One own-layer detection: which check, in which target, on what text (raw; the caller masks)."""

    id: str  # "waf.podwall.sqli.libinjection", "waf.podwall.xss.script-tag", ...
    category: str  # "sqli" or "xss"
    message: str
    location: str
    value: str  # the decoded text that matched (a window around it for signatures)


class OwnDetector:
    """libinjection plus the signature database; build once, call `inspect` per request (not thread-safe).

    Only the signatures whose paranoia level is at most `paranoia` are compiled in.
    """

    def __init__(self, signatures: Sequence[Signature] = SIGNATURES, paranoia: int = 1) -> None:
        self.paranoia = paranoia
        self.signatures = tuple(s for s in signatures if s.paranoia <= paranoia)
        self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        flags = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_DOTALL | hyperscan.HS_FLAG_SINGLEMATCH
        self._db.compile(
            expressions=[s.pattern.encode() for s in self.signatures],
            ids=list(range(len(self.signatures))),
            flags=[flags] * len(self.signatures),
        )
        self._found: list[tuple[int, int]] = []

    def _on_match(self, sig: int, start: int, end: int, flags: int, context: object) -> bool | None:
        self._found.append((sig, end))
        return None

    def scan(self, text: str) -> list[tuple[Signature, int]]:
        """The signatures matching `text`, each with the end offset of its first match."""
        self._found.clear()
        self._db.scan(text.encode("utf-8", "surrogatepass"), match_event_handler=self._on_match)
        return [(self.signatures[i], end) for i, end in self._found]

    @staticmethod
    def _libinjection_sqli(form: str) -> bool:
        found = libinjection.is_sql_injection(form)
        return bool(found["is_sqli"]) and not libinjection_benign(str(found.get("fingerprint") or ""), form)

    def inspect_value(self, target: Target) -> list[OwnHit]:
        """Every own-layer hit in one target (each check reported once per target)."""
        hits: dict[str, OwnHit] = {}
        forms = decodings(target.value, target.plus_is_space)
        raw = forms[-1] if len(forms) > 1 and forms[-1] == target.value[: len(forms[-1])] else None
        for form in forms:
            # the still-encoded form is for signatures naming an encoding; libinjection would tokenize the escapes
            tokenize = form is not raw or "%" in form
            if tokenize and "sqli" not in hits and self._libinjection_sqli(form):
                hits["sqli"] = OwnHit(
                    f"waf.podwall.sqli.{LIBINJECTION_SQLI}",
                    "sqli",
                    "SQL injection detected by libinjection",
                    target.location,
                    form[:MATCH_CONTEXT],
                )
            if tokenize and "xss" not in hits and libinjection.is_xss(form)["is_xss"]:
                hits["xss"] = OwnHit(
                    "waf.podwall.xss.libinjection",
                    "xss",
                    "XSS detected by libinjection",
                    target.location,
                    form[:MATCH_CONTEXT],
                )
            if form is forms[0]:
                # the tokenizer reads comments, quotes and escapes itself: the fully decoded form is enough
                for shape in sql_shapes(form):
                    if shape not in hits:
                        hits[shape] = OwnHit(
                            f"waf.podwall.sqli.{shape}",
                            "sqli",
                            _SHAPE_MESSAGES[shape],
                            target.location,
                            form[:MATCH_CONTEXT],
                        )
            for sig, end in self.scan(form):
                if sig.name in hits:
                    continue
                data = form.encode("utf-8", "surrogatepass")[:end].decode("utf-8", "replace")
                hits[sig.name] = OwnHit(
                    f"waf.podwall.{sig.category}.{sig.name}",
                    sig.category,
                    sig.message,
                    target.location,
                    data[-MATCH_CONTEXT:],
                )
        return list(hits.values())

    def inspect(self, request: HttpRequest) -> list[OwnHit]:
        """Every own-layer hit in a request, in request order."""
        out: list[OwnHit] = []
        for target in request_targets(request):
            out.extend(self.inspect_value(target))
        return out
