"""JA4 fingerprints: the FoxIO specification's worked example, GREASE, ALPN edge cases, real ClientHellos."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podwall.dpi.protocols.ja4 import ja4, ja4_raw
from podwall.dpi.protocols.tls import TlsParser

from .fixtures import feed_all, load_chunks

# The example of FoxIO's technical_details/JA4.md, as the TLS parser would report it.
SPEC = {
    "legacy_version": "TLSv1.2",
    "supported_versions": [0x0A0A, 0x0304, 0x0303],
    "ciphers": [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8, 0xC013, 0xC014, 0x009C,
                0x009D, 0x002F, 0x0035],
    "extensions": [0x001B, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002D, 0x000D, 0x0005, 0x0023, 0x0012,
                   0x002B, 0xFF01, 0x000B, 0x000A, 0x0015],
    "signature_algorithms": [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601],
    "alpn": ["h2", "http/1.1"],
    "sni": "example.com",
}  # fmt: skip


def test_specification_example() -> None:
    """The documented example fingerprint t13d1516h2_8daaf6152771_e5627efa2ab1 is reproduced from raw fields."""
    assert ja4(SPEC) == "t13d1516h2_8daaf6152771_e5627efa2ab1"
    assert ja4_raw(SPEC) == (
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_"
        "0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_"
        "0403,0804,0401,0503,0805,0501,0806,0601"
    )


def test_no_signature_algorithms() -> None:
    """Without signature algorithms the extension hash covers the sorted list alone (spec: 6d807ffa2a79)."""
    assert ja4({**SPEC, "signature_algorithms": []}).endswith("_6d807ffa2a79")


def test_grease_is_ignored() -> None:
    """GREASE ciphers, extensions and signature algorithms change nothing."""
    greased = {
        **SPEC,
        "ciphers": [0x2A2A, *SPEC["ciphers"]],
        "extensions": [0xFAFA, *SPEC["extensions"], 0x3A3A],
        "signature_algorithms": [0x1A1A, *SPEC["signature_algorithms"]],
    }
    assert ja4(greased) == ja4(SPEC)


@pytest.mark.parametrize(
    ("changes", "prefix"),
    [
        pytest.param({"supported_versions": []}, "t12d1516h2", id="legacy-version"),
        pytest.param({"supported_versions": [], "legacy_version": "TLSv1.0"}, "t10d1516h2", id="tls10"),
        pytest.param({"supported_versions": [], "legacy_version": "0x0305"}, "t00d1516h2", id="unknown-version"),
        pytest.param({"supported_versions": [], "sslv2_format": True}, "ts2d1516h2", id="sslv2"),
        pytest.param({"extensions": [e for e in SPEC["extensions"] if e != 0]}, "t13i1515h2", id="no-sni"),
        pytest.param({"alpn": []}, "t13d151600", id="no-alpn"),
        pytest.param({"alpn": ["http/1.1"]}, "t13d1516h1", id="http11"),
        pytest.param({"alpn": ["x"]}, "t13d1516xx", id="one-char"),
        pytest.param({"alpn": ["\\xab"]}, "t13d1516ab", id="non-alnum-byte"),
        pytest.param({"alpn": [b"\x30\xab"]}, "t13d15163b", id="alnum-then-byte"),
        pytest.param({"alpn": [b"\x30\xab\xcd\x31"]}, "t13d151601", id="alnum-ends-use-hex"),
        pytest.param({"ciphers": list(range(1, 120))}, "t13d9916h2", id="count-capped-99"),
    ],
)
def test_prefix(changes: dict[str, object], prefix: str) -> None:
    """Version, SNI, counts and the ALPN characters follow the specification's rules."""
    assert ja4({**SPEC, **changes}).split("_")[0] == prefix


def test_empty_lists_hash_to_zeros() -> None:
    """No ciphers or no extensions give 000000000000 instead of a hash of nothing."""
    assert ja4({"ciphers": [], "extensions": [0, 16]}) == "t00d000200_000000000000_000000000000"


def test_quic_transport() -> None:
    """The transport letter is given by the caller (q for QUIC)."""
    assert ja4(SPEC, transport="q").startswith("q13d")


def test_from_real_client_hello() -> None:
    """The curl ClientHello of the corpus yields a well-formed fingerprint consistent with its fields."""
    events = feed_all(TlsParser(), load_chunks("tls_curl")[:1])
    fields = events[0].fields
    fingerprint = ja4(fields)
    a, b, c = fingerprint.split("_")
    assert a[:4] == ("t13d" if fields["version"] == "TLSv1.3" else a[:4])
    assert len(b) == len(c) == 12 and int(b, 16) >= 0 and int(c, 16) >= 0
    assert int(a[4:6]) == len(fields["ciphers"]) - sum(1 for x in fields["ciphers"] if (x & 0x0F0F) == 0x0A0A)


@given(st.lists(st.integers(0, 0xFFFF), max_size=40), st.lists(st.integers(0, 0xFFFF), max_size=40))
def test_order_of_ciphers_and_extensions_does_not_matter(ciphers: list[int], extensions: list[int]) -> None:
    """Cipher and extension order never changes the fingerprint (the lists are sorted)."""
    fields = {"ciphers": ciphers, "extensions": extensions, "supported_versions": [0x0304]}
    shuffled = {"ciphers": ciphers[::-1], "extensions": extensions[::-1], "supported_versions": [0x0304]}
    assert ja4(fields) == ja4(shuffled)
