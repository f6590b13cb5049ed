"""Real captures (nDPI's test corpus): the tunnels are found, ordinary traffic makes no threat at all."""

from __future__ import annotations

import pytest

from tests.conftest import corpus_dir
from tests.unit.inspect.threat_kit import ids, run_capture


@pytest.mark.parametrize(
    ("capture", "threat"),
    [("dns-tunnel-iodine.pcap", "threat.dns_tunnel"), ("icmp-tunnel.pcap", "threat.icmp_tunnel")],
    ids=["iodine", "icmp-tunnel"],
)
def test_tunnel_captures_are_found(capture: str, threat: str) -> None:
    """The iodine DNS tunnel and the ICMP tunnel captures each produce their tunnelling finding."""
    found = run_capture(corpus_dir("dpi", "ndpi") / capture)
    assert threat in ids(found)


def test_iodine_is_also_a_null_type_client() -> None:
    """iodine asks for NULL records, which is reported as its own threat."""
    found = ids(run_capture(corpus_dir("dpi", "ndpi") / "dns-tunnel-iodine.pcap"))
    assert "threat.dns_null_type" in found and "threat.icmp_tunnel" not in found


ORDINARY = [
    "dns.pcap",
    "dns-google-nsid.pcapng",
    "dns_ambiguous_names.pcap",
    "dns_long_domainname.pcap",
    "http.pcapng",
    "http-lines-split.pcap",
    "http-manipulated.pcap",
    "http_auth.pcap",
    "443-curl.pcap",
    "443-git.pcap",
    "long_tls_certificate.pcap",
    "tls_ech.pcapng",
    "ssh.pcap",
    "mysql.pcapng",
    "pgsql.pcap",
    "resp.pcap",
]


@pytest.mark.parametrize("capture", ORDINARY)
def test_ordinary_captures_make_no_threat(capture: str) -> None:
    """Ordinary DNS, HTTP, TLS, SSH and database captures make no threat finding of any kind."""
    assert ids(run_capture(corpus_dir("dpi", "ndpi") / capture)) == []
