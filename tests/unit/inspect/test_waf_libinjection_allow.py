"""podwall's allow-list for libinjection's weakest SQLi fingerprints: benign shapes pass, injections stay flagged."""

from __future__ import annotations

import libinjection
import pytest

from podwall.inspect.waf.detect import OwnDetector
from podwall.inspect.waf.libinjection_allow import libinjection_benign
from podwall.inspect.waf.targets import Target

# (value, allowed?): each value is one libinjection flags; the allow-list decides
CASES = [
    # a quoted search word at the start or end of the value
    pytest.param('"AND" more', True, id="quoted-word-first"),
    pytest.param("' =+ '", False, id="symbol-operator"),
    # a base64-looking token
    pytest.param("2024-abcDEF--", True, id="base64-token"),
    pytest.param("1--", False, id="number-comment"),
    # a string break whose expression cannot be true
    pytest.param('/s/h?q=&Q="MOD"&view=gallery&page=14', True, id="quoted-mod-in-url"),
    pytest.param('search "LIKE" stamps and more', True, id="quoted-like-in-prose"),
    pytest.param('the \'big red" and "blue car', True, id="phrase-and-phrase"),
    pytest.param('see <a href="/teams/">our teams</a>', True, id="html-attribute-division-chain"),
    pytest.param('intérêts communs é <a href="/teams/">équipes</a>', True, id="non-ascii-text"),
    pytest.param("a' or 'b", False, id="probe-single-words"),
    pytest.param("some text' or '1", False, id="truthy-number-tail"),
    pytest.param("some text' or 'yes", False, id="truthy-word-tail"),
    pytest.param("some text' + 'more text", False, id="arithmetic-tautology"),
    pytest.param("some text' = 'more text", False, id="comparison"),
    pytest.param("some text' or 0+1 or 'more text", False, id="folded-middle"),
    pytest.param('some text" LIKE "%', False, id="like-wildcard-only"),
    # percentages in prose
    pytest.param("35% cotton and 65% polyester.", True, id="percentages"),
    pytest.param("35% off' or 1=1 --", False, id="percentage-then-injection"),
]


@pytest.mark.parametrize(("value", "allowed"), CASES)
def test_allow_list_passes_benign_shapes_and_keeps_injections(value: str, allowed: bool) -> None:
    """A libinjection hit is allowed only in the shapes that cannot be an injection."""
    found = libinjection.is_sql_injection(value)
    assert found["is_sqli"], f"libinjection no longer flags {value!r}: the case tests nothing"
    assert libinjection_benign(str(found["fingerprint"]), value) is allowed


def test_allow_list_needs_the_fingerprint_libinjection_gave() -> None:
    """The string-break rule applies only to the sos / s&s fingerprints it was written for."""
    value = '/s/h?q=&Q="MOD"&view=gallery&page=14'
    assert libinjection_benign("sos", value)
    assert not libinjection_benign("1&1", value)
    assert not libinjection_benign("", "")


@pytest.mark.parametrize(
    ("value", "flagged"),
    [
        pytest.param("35% cotton and 65% polyester.", False, id="percentages"),
        pytest.param("1' or '1'='1", True, id="tautology"),
    ],
)
def test_own_layer_applies_the_allow_list(value: str, flagged: bool) -> None:
    """The own layer's libinjection check reports only hits the allow-list keeps."""
    hits = OwnDetector(paranoia=1).inspect_value(Target("ARGS:q", value))
    assert any(h.id == "waf.podwall.sqli.libinjection" for h in hits) is flagged
