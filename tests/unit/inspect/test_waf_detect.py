"""podwall's own WAF layer: which values of a request it inspects, how it decodes them, what it flags."""

from __future__ import annotations

import pytest

from podwall.inspect.waf.detect import OwnDetector
from podwall.inspect.waf.http_request import HttpRequest
from podwall.inspect.waf.signatures import SIGNATURES
from podwall.inspect.waf.targets import MAX_TARGETS, Target, decodings, request_targets


@pytest.fixture(scope="module")
def detector() -> OwnDetector:
    return OwnDetector()


def _locs(req: HttpRequest) -> dict[str, str]:
    return {t.location: t.value for t in request_targets(req)}


TARGETS = [
    pytest.param(HttpRequest("GET", "/a/b%20c?x=1&flag"), {"REQUEST_FILENAME", "ARGS:x", "ARGS_NAMES:flag"},
                 id="query"),
    pytest.param(
        HttpRequest("POST", "/", headers=(("Content-Type", "application/json"),), body=b'{"a": {"b": ["v", 2]}}'),
        {"ARGS:json.a.b.0", "ARGS:json.a.b.1", "ARGS_NAMES:json.a"},
        id="json",
    ),
    pytest.param(
        HttpRequest("POST", "/", headers=(("Content-Type", "multipart/form-data; boundary=XX"),),
                    body=b'--XX\r\nContent-Disposition: form-data; name="c"\r\n\r\nhello\r\n--XX\r\n'
                         b'Content-Disposition: form-data; name="f"; filename="a.php"\r\n\r\nDATA\r\n--XX--\r\n'),
        {"ARGS:c", "FILES:f"},
        id="multipart",
    ),
    pytest.param(
        HttpRequest("POST", "/", headers=(("Content-Type", "text/xml"),), body=b'<r><a probe="v">text</a></r>'),
        {"XML://@probe", "XML:/*"},
        id="xml",
    ),
    pytest.param(
        HttpRequest("GET", "/", headers=(("Cookie", "sid=abc; t=1"), ("X-Api", "v"), ("Accept", "*/*"))),
        {"REQUEST_COOKIES:sid", "REQUEST_COOKIES:t", "REQUEST_HEADERS:X-Api"},
        id="cookies-and-headers",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("req", "expected"), TARGETS)
def test_request_targets_name_every_value(req: HttpRequest, expected: set[str]) -> None:
    """Path segments, arguments by body type, cookies and free-form headers become named targets."""
    assert expected <= set(_locs(req))


def test_fixed_format_headers_and_file_contents_are_not_targets() -> None:
    """Accept, Authorization and uploaded file bodies are not inspected as arguments."""
    req = HttpRequest(
        "POST",
        "/",
        headers=(("Accept", "*/*"), ("Authorization", "Bearer x"), ("Content-Type", "multipart/form-data; boundary=B")),
        body=b'--B\r\nContent-Disposition: form-data; name="f"; filename="x"\r\n\r\nSELECT 1\r\n--B--\r\n',
    )
    locs = _locs(req)
    assert not any(k.startswith("REQUEST_HEADERS:") for k in locs)
    assert "SELECT 1" not in locs.values()


def test_targets_are_bounded() -> None:
    """A request with very many arguments yields at most MAX_TARGETS targets."""
    query = "&".join(f"a{i}=v" for i in range(MAX_TARGETS * 2))
    assert len(request_targets(HttpRequest("GET", f"/?{query}"))) == MAX_TARGETS


DECODE = [
    pytest.param("%2527%20OR%201", "' OR 1", id="double-url"),
    pytest.param("a+b", "a b", id="plus-is-space"),
    pytest.param("&lt;script&gt;", "<script>", id="html-entities"),
    pytest.param("\\u003cimg\\x3e", "<img>", id="js-escapes"),
    pytest.param("1/**/UNION/**/SELECT", "1 UNION SELECT", id="sql-comments"),
]


@pytest.mark.parametrize(("raw", "decoded"), DECODE)
def test_decodings_undo_attacker_encodings(raw: str, decoded: str) -> None:
    """The decoded forms include the value with the evasion removed."""
    assert decoded in decodings(raw)


def test_path_plus_is_not_space() -> None:
    """In a path '+' is literal, unlike in a form value."""
    assert decodings("a+b", plus_is_space=False)[0] == "a+b"


HITS = [
    pytest.param("1' or '1'='1", "sqli", id="sqli-tautology"),
    pytest.param("1 UNION ALL SELECT null,version()", "sqli", id="sqli-union"),
    pytest.param("x';WAITFOR DELAY '0:0:5'--", "sqli", id="sqli-time-delay"),
    pytest.param("1%2f%2a%2a%2fUNION%2f%2a%2a%2fSELECT%2f%2a%2a%2f1", "sqli", id="sqli-comment-obfuscated"),
    pytest.param("<svg/onload=alert(1)>", "xss", id="xss-event-handler"),
    pytest.param("javascript:alert(document.cookie)", "xss", id="xss-javascript-uri"),
    pytest.param("&lt;script&gt;alert(1)&lt;/script&gt;", "xss", id="xss-entity-encoded"),
]


@pytest.mark.parametrize(("value", "category"), HITS)
def test_attacks_are_flagged_with_category(detector: OwnDetector, value: str, category: str) -> None:
    """Classic SQLi/XSS values are flagged, each hit in podwall's id range and category."""
    hits = detector.inspect_value(Target("ARGS:q", value))
    assert category in {h.category for h in hits}
    assert all(h.id.startswith(f"waf.podwall.{h.category}.") and h.location == "ARGS:q" for h in hits)


BENIGN = [
    pytest.param("john.smith@example.com", id="email"),
    pytest.param("The union of two sets; select the larger one", id="prose-with-keywords"),
    pytest.param("price < 40 and size > 2", id="comparison-prose"),
    pytest.param("O'Brien", id="apostrophe-name"),
    pytest.param("2024-05-01T10:00:00Z", id="timestamp"),
    pytest.param("I love you <3", id="heart"),
]


@pytest.mark.parametrize("value", BENIGN)
def test_benign_values_are_not_flagged(detector: OwnDetector, value: str) -> None:
    """Ordinary user input gives no own-layer hit."""
    assert detector.inspect_value(Target("ARGS:q", value)) == []


def test_each_check_reports_once_per_target(detector: OwnDetector) -> None:
    """A check that matches several decoded forms of one value is reported once."""
    hits = detector.inspect_value(Target("ARGS:q", "%253Cscript%253Ealert(1)%253C/script%253E"))
    ids = [h.id for h in hits]
    assert len(ids) == len(set(ids))


def test_signatures_have_unique_names_and_known_categories() -> None:
    """Signature names are unique (they end the finding ids) and each is sqli or xss."""
    names = [s.name for s in SIGNATURES]
    assert len(names) == len(set(names))
    assert {s.category for s in SIGNATURES} == {"sqli", "xss"}
