"""The models of a rule's `l7` block: what HTTP, gRPC, DNS, Redis, SQL and TLS requests it admits.

Validation only (pydantic v2, unknown fields rejected); `podwall.policy.l7match` compiles these
into the tests run per request.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from podwall.policy.specs import MAX_NAME_LEN, MAX_VALUE_LEN, check_name_pattern


class _Model(BaseModel):
    # The same strictness as the policy models: a typo in a matcher must not pass silently.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_regex(value: str) -> str:
    if len(value) > MAX_VALUE_LEN:
        raise ValueError(f"regular expression is longer than {MAX_VALUE_LEN} characters")
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
    return value


def _check_method(text: str) -> str:
    value = text.strip().upper()
    if not value or not value.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"invalid method {text!r}")
    return value


def _check_token(text: str) -> str:
    value = text.strip()
    if not value or len(value) > MAX_NAME_LEN or any(ch.isspace() for ch in value):
        raise ValueError(f"invalid name {text!r}: expected a non-empty word without spaces")
    return value


Regex = Annotated[str, AfterValidator(_check_regex)]
NamePattern = Annotated[str, AfterValidator(check_name_pattern)]
Method = Annotated[str, AfterValidator(_check_method)]
Token = Annotated[str, AfterValidator(_check_token)]
SqlKind = Literal["select", "insert", "update", "delete", "ddl", "other"]
SQL_KINDS: tuple[str, ...] = ("select", "insert", "update", "delete", "ddl", "other")


class PathMatch(_Model):
    """An HTTP path test: exactly one of `exact`, `prefix` or `regex` (full match)."""

    exact: str | None = None
    prefix: str | None = None
    regex: Regex | None = None

    @model_validator(mode="after")
    def _one(self) -> PathMatch:
        given = [k for k in ("exact", "prefix", "regex") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a path matcher takes exactly one of exact, prefix or regex")
        return self


class HeaderMatch(_Model):
    """An HTTP header test: `name` present, equal to `value`, or fully matching `regex`."""

    name: Token
    value: str | None = None
    regex: Regex | None = None

    @model_validator(mode="after")
    def _one(self) -> HeaderMatch:
        if self.value is not None and self.regex is not None:
            raise ValueError("a header matcher takes value or regex, not both")
        return self


class HttpMatch(_Model):
    """HTTP requests: method in `methods`, path matching one of `paths`, host one of `hosts`
    (wildcards `*.domain`), and every header test in `headers`. Empty lists do not constrain."""

    methods: list[Method] = Field(default_factory=list)
    paths: list[PathMatch] = Field(default_factory=list)
    hosts: list[NamePattern] = Field(default_factory=list)
    headers: list[HeaderMatch] = Field(default_factory=list)


class GrpcMatch(_Model):
    """gRPC calls: service (`pkg.Service`) one of `services`, method name one of `methods`."""

    services: list[Token] = Field(default_factory=list)
    methods: list[Token] = Field(default_factory=list)


class DnsMatch(_Model):
    """DNS queries whose name is one of `names` (wildcards `*.domain`)."""

    names: list[NamePattern] = Field(default_factory=list)


class RedisMatch(_Model):
    """Redis commands (case-insensitive) in `commands`."""

    commands: list[Method] = Field(default_factory=list)


class SqlMatch(_Model):
    """MySQL/PostgreSQL statements whose kind is in `kinds`."""

    kinds: list[SqlKind] = Field(default_factory=list)


class TlsMatch(_Model):
    """TLS handshakes whose SNI is one of `sni` (wildcards `*.domain`)."""

    sni: list[NamePattern] = Field(default_factory=list)


L7_PROTOCOLS: tuple[str, ...] = ("http", "grpc", "dns", "redis", "sql", "tls")


class L7Match(_Model):
    """A rule's `l7` block: one section per protocol; a request is admitted when the section of
    its protocol exists and holds for it (see docs/policy.md, "L7 matchers")."""

    http: HttpMatch | None = None
    grpc: GrpcMatch | None = None
    dns: DnsMatch | None = None
    redis: RedisMatch | None = None
    sql: SqlMatch | None = None
    tls: TlsMatch | None = None

    @model_validator(mode="after")
    def _some(self) -> L7Match:
        if all(getattr(self, k) is None for k in L7_PROTOCOLS):
            raise ValueError(f"l7 needs at least one of {', '.join(L7_PROTOCOLS)}")
        return self

    @property
    def sections(self) -> tuple[str, ...]:
        return tuple(k for k in L7_PROTOCOLS if getattr(self, k) is not None)
