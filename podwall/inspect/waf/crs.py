"""Finding Debian's OWASP Core Rule Set and the ModSecurity configuration podwall runs it with.

Debian's `modsecurity-crs` package puts the rules in /usr/share/modsecurity-crs/rules and the
setup in /etc/modsecurity/crs/crs-setup.conf (both overridable: `PODWALL_CRS_RULES`,
`PODWALL_CRS_SETUP`). Debian ships no engine configuration for libmodsecurity outside a web
server, so podwall writes its own (`engine_config`): the engine runs detection-only (podwall
decides the verdict from the anomaly score), parses urlencoded, multipart, JSON and XML bodies,
and two podwall rules log the inbound and outbound anomaly scores so they can be read back.

Loading (`load_crs`) tries every rule file on its own first: a file that needs something this
libmodsecurity lacks (GeoIP, a missing data file) is skipped with a reason instead of failing
the whole rule set. This module reads no file itself: libmodsecurity does, at load time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import libmodsecurity

from podwall.core.errors import PodwallError
from podwall.inspect.waf.crs4 import crs4_directives

__all__ = [
    "DEFAULT_RULES_DIR",
    "DEFAULT_SETUP",
    "INBOUND_SCORE_RULE",
    "OUTBOUND_SCORE_RULE",
    "CrsLoad",
    "CrsLocation",
    "WafConfigError",
    "engine_config",
    "load_crs",
    "locate_crs",
]

DEFAULT_RULES_DIR = Path("/usr/share/modsecurity-crs/rules")
DEFAULT_SETUP = Path("/etc/modsecurity/crs/crs-setup.conf")
BEFORE_CRS = "REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf"  # optional, beside crs-setup.conf
AFTER_CRS = "RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf"

# podwall's own SecRule ids: ModSecurity keeps 1-99,999 for local use, and CRS uses 9xx,xxx.
INBOUND_SCORE_RULE = 99001
OUTBOUND_SCORE_RULE = 99002
PODWALL_RULE_IDS = frozenset({99010, 99011, 99012, INBOUND_SCORE_RULE, OUTBOUND_SCORE_RULE})

_CRS_VERSION = re.compile(rb"ver:'OWASP_CRS/([0-9.]+)'")


class WafConfigError(PodwallError):
    """The WAF cannot be set up: the rule set is missing, or the settings are out of range."""


@dataclass(frozen=True, slots=True)
class CrsLocation:
    """Where the rule set lives: the rules folder and the setup file (plus the optional exclusion files)."""

    rules_dir: Path
    setup: Path

    def files(self) -> list[Path]:
        """Every file to load, in CRS order: setup, exclusions before, the rules, exclusions after."""
        before = self.setup.parent / BEFORE_CRS
        after = self.setup.parent / AFTER_CRS
        rules = sorted(self.rules_dir.glob("*.conf"))
        return [self.setup, *([before] if before.is_file() else []), *rules, *([after] if after.is_file() else [])]

    def version(self) -> str | None:
        """The CRS version the rules declare (e.g. `3.3.4`), read from the initialization rules."""
        init = next(iter(sorted(self.rules_dir.glob("REQUEST-901-*.conf"))), None)
        if init is None:
            return None
        try:
            m = _CRS_VERSION.search(init.read_bytes())
        except OSError:
            return None
        return m.group(1).decode() if m else None


def locate_crs(rules_dir: Path | str | None = None, setup: Path | str | None = None) -> CrsLocation:
    """The rule set to use: the given paths, else `$PODWALL_CRS_RULES` / `$PODWALL_CRS_SETUP`, else Debian's."""
    rules = Path(rules_dir or os.environ.get("PODWALL_CRS_RULES") or DEFAULT_RULES_DIR)
    setup_file = Path(setup or os.environ.get("PODWALL_CRS_SETUP") or DEFAULT_SETUP)
    if not rules.is_dir() or not any(rules.glob("*.conf")):
        raise WafConfigError(
            f"OWASP CRS rules not found in {rules} (install Debian's modsecurity-crs or set PODWALL_CRS_RULES)"
        )
    if not setup_file.is_file():
        raise WafConfigError(
            f"CRS setup file {setup_file} not found (install Debian's modsecurity-crs or set PODWALL_CRS_SETUP)"
        )
    return CrsLocation(rules, setup_file)


def check_levels(paranoia: int, threshold: int, outbound_threshold: int) -> None:
    """Reject settings CRS does not understand, naming the setting."""
    if not 1 <= paranoia <= 4:
        raise WafConfigError(f"paranoia level {paranoia} is out of range: CRS has levels 1 to 4")
    if threshold < 1:
        raise WafConfigError(f"inbound anomaly threshold {threshold} must be at least 1")
    if outbound_threshold < 1:
        raise WafConfigError(f"outbound anomaly threshold {outbound_threshold} must be at least 1")


def engine_config(body_limit: int) -> str:
    """The engine directives, loaded before the CRS setup (podwall's replacement for modsecurity.conf)."""
    return f"""
SecRuleEngine DetectionOnly
SecRequestBodyAccess On
SecRequestBodyLimit {body_limit}
SecRequestBodyNoFilesLimit {body_limit}
SecRequestBodyLimitAction ProcessPartial
SecResponseBodyAccess On
SecResponseBodyMimeType text/plain text/html text/xml application/json
SecResponseBodyLimit {body_limit}
SecResponseBodyLimitAction ProcessPartial
SecAuditEngine Off
SecArgumentSeparator &
SecCookieFormat 0
SecPcreMatchLimit 100000
SecPcreMatchLimitRecursion 100000
SecRule REQUEST_HEADERS:Content-Type "@rx (?i)^(?:application(?:/soap\\+|/)|text/)xml" \\
    "id:99010,phase:1,t:none,pass,nolog,ctl:requestBodyProcessor=XML"
SecRule REQUEST_HEADERS:Content-Type "@rx (?i)^application/(?:[a-z0-9.+-]+\\+)?json" \\
    "id:99011,phase:1,t:none,pass,nolog,ctl:requestBodyProcessor=JSON"
"""


# CRS 3.3.4's default request content types plus the ones service-to-service traffic uses
# (gRPC, protobuf): without them every gRPC call would be blocked by rule 920420.
ALLOWED_CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "multipart/related",
    "text/xml",
    "application/xml",
    "application/soap+xml",
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/grpc",
    "application/grpc+proto",
    "application/grpc+json",
    "application/grpc-web",
    "application/grpc-web+proto",
    "application/x-protobuf",
    "application/protobuf",
]


def podwall_setup(paranoia: int, threshold: int, outbound_threshold: int) -> str:
    """The CRS variables podwall sets (what crs-setup.conf's commented 900000/900110/900220 examples set)."""
    types = " ".join(f"|{t}|" for t in ALLOWED_CONTENT_TYPES)
    return f"""
SecAction "id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={paranoia}"
SecAction "id:900110,phase:1,nolog,pass,t:none,\\
    setvar:tx.inbound_anomaly_score_threshold={threshold},\\
    setvar:tx.outbound_anomaly_score_threshold={outbound_threshold}"
SecAction "id:900220,phase:1,nolog,pass,t:none,setvar:'tx.allowed_request_content_type={types}'"
"""


def score_rules() -> str:
    """Two rules run last in phases 2 and 4 that log CRS's summed scores, so the wrapper can read them."""
    return f"""
SecAction "id:{INBOUND_SCORE_RULE},phase:2,pass,log,t:none,msg:'podwall inbound anomaly score',\\
    logdata:'%{{tx.anomaly_score}}'"
SecAction "id:{OUTBOUND_SCORE_RULE},phase:4,pass,log,t:none,msg:'podwall outbound anomaly score',\\
    logdata:'%{{tx.outbound_anomaly_score}}'"
"""


@dataclass(slots=True)
class CrsLoad:
    """What went into a rule set: the rules loaded per file and the files skipped, with the reason."""

    location: CrsLocation
    loaded: list[tuple[Path, int]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def rule_count(self) -> int:
        return sum(n for _, n in self.loaded)

    def warnings(self) -> list[str]:
        return [f"skipped {path.name}: {reason}" for path, reason in self.skipped]


def _load_text(rules: libmodsecurity.RulesSet, text: str, what: str) -> int:
    n = rules.load(text)
    if n < 0:
        raise WafConfigError(f"{what} does not load: {rules.get_parser_error().strip()}")
    return n


def load_crs(
    rules: libmodsecurity.RulesSet,
    location: CrsLocation,
    paranoia: int = 1,
    threshold: int = 5,
    outbound_threshold: int = 4,
    body_limit: int = 1 << 20,
) -> CrsLoad:
    """Load the engine configuration, the CRS (skipping files that cannot load) and the score rules."""
    check_levels(paranoia, threshold, outbound_threshold)
    report = CrsLoad(location)
    _load_text(rules, engine_config(body_limit), "podwall's engine configuration")
    for path in location.files():
        if path == location.setup:
            # podwall's variables go right after the setup file, before CRS initialises its defaults
            _load_one(rules, path, report)
            _load_text(rules, podwall_setup(paranoia, threshold, outbound_threshold), "podwall's CRS settings")
        else:
            _load_one(rules, path, report)
    # after the rules they change: CRS 4's removals and extra targets (crs4.py)
    _load_text(rules, crs4_directives(), "podwall's CRS 4 alignment")
    _load_text(rules, score_rules(), "podwall's score rules")
    if not any(p.name.startswith("REQUEST-949") for p, _ in report.loaded):
        raise WafConfigError(f"{location.rules_dir}: the CRS blocking evaluation (REQUEST-949) did not load")
    return report


def _load_one(rules: libmodsecurity.RulesSet, path: Path, report: CrsLoad) -> None:
    # A file that fails half-way would leave a partial set behind: try it alone first.
    trial = libmodsecurity.RulesSet()
    if trial.load_from_uri(str(path)) < 0:
        report.skipped.append((path, _reason(trial.get_parser_error())))
        return
    n = rules.load_from_uri(str(path))
    if n < 0:
        report.skipped.append((path, _reason(rules.get_parser_error())))
        return
    report.loaded.append((path, n))


def _reason(error: str) -> str:
    # libmodsecurity's message starts with "Rules error. File: <path>. " which the caller already names
    text = " ".join(error.split())
    m = re.search(r"Line: (\d+)\. Column: \d+\. (.*)", text)
    return f"line {m.group(1)}: {m.group(2)}" if m else text or "unknown parser error"
