"""Which hosts DataPilot may connect to for URLs users supply (data-source URLs, proxy model base URLs,
embedder and reranker endpoints): an allow/deny policy checked before the URL is accepted and again
before a connection is made.

Order: an ``outbound_allow`` entry that matches lets the host through (the operator's exceptions win);
then an ``outbound_deny`` entry refuses it; then the built-in rules refuse link-local addresses
(169.254.0.0/16, fe80::/10) and cloud metadata endpoints (169.254.169.254, fd00:ec2::254,
100.100.100.200, metadata.google.internal). Anything else, loopback and private ranges included
(local models, local databases), is allowed. A host name is checked by name, then every address it
resolves to is checked; a name that does not resolve passes (the connection fails on its own). HTTP
clients to user-given URLs (``models._openai_http``) check again at connection time, the addresses they
are about to connect to, so a name that re-resolves to a refused address later (DNS rebinding) is
refused too.
Entries are CIDRs / addresses (``10.0.0.0/8``, ``::1``) or host names (``db.example.com`` matches it
and its subdomains; ``*.example.com`` only subdomains).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from datapilot.core.errors import InvalidRequestError

if TYPE_CHECKING:
    from datapilot.core.config import SecuritySettings

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The built-in deny rules: (entry, why).
BUILTIN_DENY: tuple[tuple[str, str], ...] = (
    ("169.254.169.254/32", "cloud metadata endpoint"),
    ("fd00:ec2::254/128", "cloud metadata endpoint"),
    ("100.100.100.200/32", "cloud metadata endpoint"),
    ("metadata.google.internal", "cloud metadata endpoint"),
    ("169.254.0.0/16", "link-local address"),
    ("fe80::/10", "link-local address"),
)


class URLNotAllowedError(InvalidRequestError):
    """A URL's host is refused by the outbound policy: 400 ``url_not_allowed``."""

    default_code = "url_not_allowed"


@dataclass(frozen=True)
class _Rule:
    text: str
    network: IPNetwork | None = None
    name: str | None = None  # lower case, without a leading "*." (then subdomains_only)
    subdomains_only: bool = False

    @classmethod
    def parse(cls, entry: str) -> _Rule:
        text = entry.strip()
        try:
            return cls(text, network=ipaddress.ip_network(text.strip("[]"), strict=False))
        except ValueError:
            pass
        name = text.lower().rstrip(".")
        if not name or any(c.isspace() or c in "/:@" for c in name):
            raise ValueError(f"{entry!r} is neither a CIDR, an address nor a host name")
        if name.startswith("*."):
            return cls(text, name=name[2:], subdomains_only=True)
        return cls(text, name=name.lstrip("."))

    def matches_name(self, host: str) -> bool:
        if self.name is None:
            return False
        if host.endswith("." + self.name):
            return True
        return not self.subdomains_only and host == self.name

    def matches_ip(self, ip: IPAddress) -> bool:
        return self.network is not None and ip.version == self.network.version and ip in self.network


def _rules(entries: Iterable[str], where: str) -> tuple[_Rule, ...]:
    out = []
    for e in entries:
        try:
            out.append(_Rule.parse(e))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return tuple(out)


def _ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.strip("[]").split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def resolve(host: str) -> list[IPAddress]:
    """The addresses ``host`` resolves to (none when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    out: list[IPAddress] = []
    for info in infos:
        ip = _ip(str(info[4][0]))
        if ip is not None and ip not in out:
            out.append(ip)
    return out


@dataclass(frozen=True)
class OutboundPolicy:
    """The allow/deny policy; ``OutboundPolicy()`` is the built-in one."""

    allow: tuple[_Rule, ...] = ()
    deny: tuple[_Rule, ...] = ()
    builtin: tuple[tuple[_Rule, str], ...] = field(
        default_factory=lambda: tuple((_Rule.parse(e), why) for e, why in BUILTIN_DENY)
    )

    @classmethod
    def of(cls, allow: Sequence[str] = (), deny: Sequence[str] = ()) -> OutboundPolicy:
        return cls(allow=_rules(allow, "security.outbound_allow"), deny=_rules(deny, "security.outbound_deny"))

    @classmethod
    def from_settings(cls, security: SecuritySettings | None) -> OutboundPolicy:
        if security is None:
            return cls()
        return cls.of(security.outbound_allow, security.outbound_deny)

    def _verdict(self, host: str, ip: IPAddress | None) -> str | None:
        """None when allowed, else the rule that refuses, in words."""
        for rule in self.allow:
            if (ip is None and rule.matches_name(host)) or (ip is not None and rule.matches_ip(ip)):
                return None
        for rule in self.deny:
            if (ip is None and rule.matches_name(host)) or (ip is not None and rule.matches_ip(ip)):
                return f"security.outbound_deny entry {rule.text!r}"
        for rule, why in self.builtin:
            if (ip is None and rule.matches_name(host)) or (ip is not None and rule.matches_ip(ip)):
                return f"{why} ({rule.text}), refused by default; allow it with security.outbound_allow"
        return None

    def refusal(self, host: str, addresses: Iterable[str] | None = None) -> str | None:
        """None when DataPilot may connect to ``host``, else why not. ``addresses``: what ``host`` was
        resolved to for the connection about to be made (checked instead of resolving it again, so the
        addresses checked are the ones connected to)."""
        host = host.strip().lower().rstrip(".")
        if not host:
            return None
        literal = _ip(host)
        if literal is not None:
            why = self._verdict(host, literal)
            return None if why is None else f"{host}: {why}"
        why = self._verdict(host, None)
        if why is not None:
            return f"{host}: {why}"
        if any(rule.matches_name(host) for rule in self.allow):
            return None
        ips = resolve(host) if addresses is None else [ip for a in addresses if (ip := _ip(a)) is not None]
        for ip in ips:
            why = self._verdict(host, ip)
            if why is not None:
                return f"{host} resolves to {ip}: {why}"
        return None

    def check_host(self, host: str | None, *, what: str = "URL", param: str | None = None) -> None:
        """Raise ``URLNotAllowedError`` (400 ``url_not_allowed``) when ``host`` is refused."""
        if not host:
            return
        why = self.refusal(host)
        if why is not None:
            raise URLNotAllowedError(f"{what} is not allowed: {why}", param=param)

    def check_url(self, url: str | None, *, what: str = "URL", param: str | None = None) -> None:
        """Check the host of ``url`` (any scheme; a URL without a host, e.g. ``sqlite:///x.db``, passes)."""
        if not url:
            return
        try:
            host = urlsplit(url.strip()).hostname
        except ValueError:
            raise URLNotAllowedError(f"{what} is not a valid URL", param=param) from None
        self.check_host(host, what=what, param=param)


_current = OutboundPolicy()


def set_outbound_policy(policy: OutboundPolicy) -> None:
    """The process-wide policy, for code that sees no settings (e.g. a model backend); set at start-up."""
    global _current
    _current = policy


def outbound_policy() -> OutboundPolicy:
    return _current
