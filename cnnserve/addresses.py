"""Whether an address stays on this machine: a host (the server's --host) or a gRPC target (the client's --server).

The server turns reflection on by default only on loopback; the client sends a token in clear text only there.
"""

from __future__ import annotations

import ipaddress

_TARGET_SCHEMES = ("dns:///", "dns:", "ipv4:", "ipv6:")


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (with or without brackets)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local_target(target: str) -> bool:
    """True when a gRPC target cannot leave this machine: a unix socket or a loopback host:port."""
    if target.startswith(("unix:", "unix-abstract:")):
        return True
    for scheme in _TARGET_SCHEMES:
        if target.startswith(scheme):
            target = target[len(scheme) :]
            break
    if target.startswith("["):  # [::1]:8001
        return is_loopback(target[1:].split("]", 1)[0])
    return is_loopback(target.rsplit(":", 1)[0] if target.count(":") == 1 else target)
