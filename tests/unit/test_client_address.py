"""ClientAddress: the client's address behind a trusted reverse proxy (wxapp_backend/http.py)."""

from __future__ import annotations

import pytest

from wxapp_backend.http import ClientAddress


def _seen(trusted: str, peer: str, forwarded: str | None) -> tuple[str, str | None]:
    got: dict = {}

    def app(environ, start_response):
        got.update(addr=environ["REMOTE_ADDR"], proxy=environ.get("wxapp.proxy_addr"))
        return [b""]

    environ = {"REMOTE_ADDR": peer}
    if forwarded is not None:
        environ["HTTP_X_FORWARDED_FOR"] = forwarded
    ClientAddress(app, trusted)(environ, lambda *a: None)
    return got["addr"], got["proxy"]


@pytest.mark.parametrize(("trusted", "peer", "forwarded", "expected"), [
    ("127.0.0.1", "127.0.0.1", "203.0.113.7", ("203.0.113.7", "127.0.0.1")),  # nginx on the same machine
    ("127.0.0.1", "198.51.100.9", "203.0.113.7", ("198.51.100.9", None)),  # not from the proxy: header ignored
    ("127.0.0.1", "127.0.0.1", None, ("127.0.0.1", None)),
    # A client's own X-Forwarded-For is on the left; the proxy appends the address it saw on the right.
    ("127.0.0.1", "127.0.0.1", "6.6.6.6, 203.0.113.7", ("203.0.113.7", "127.0.0.1")),
    # Two proxies (a load balancer at 10.0.0.2 in front of nginx): skip the trusted hops.
    ("127.0.0.1,10.0.0.2", "127.0.0.1", "203.0.113.7, 10.0.0.2", ("203.0.113.7", "127.0.0.1")),
    ("*", "10.9.9.9", "203.0.113.7", ("203.0.113.7", "10.9.9.9")),
    ("127.0.0.1", "127.0.0.1", " , ", ("127.0.0.1", None)),  # an empty header changes nothing
    # Hops that are not addresses are never the client (a proxy that passes the client's header through).
    ("127.0.0.1", "127.0.0.1", "not-an-address", ("127.0.0.1", None)),
    ("127.0.0.1", "127.0.0.1", "1.2.3.4:5555, evil", ("127.0.0.1", None)),
    ("127.0.0.1", "127.0.0.1", "<script>", ("127.0.0.1", None)),
    # Written with a port, in brackets, or IPv4-mapped: the same address.
    ("127.0.0.1", "127.0.0.1", "203.0.113.7:5678", ("203.0.113.7", "127.0.0.1")),
    ("127.0.0.1", "127.0.0.1", "[2001:db8::1]:443", ("2001:db8::1", "127.0.0.1")),
    ("127.0.0.1", "127.0.0.1", "::ffff:203.0.113.7", ("203.0.113.7", "127.0.0.1")),
    # gunicorn gives a peer on a UNIX socket an empty REMOTE_ADDR and trusts it; so do we.
    ("127.0.0.1", "", "203.0.113.7", ("203.0.113.7", "")),
    ("127.0.0.1,::1", "::1", "203.0.113.7", ("203.0.113.7", "::1")),
])
def test_client_address(trusted, peer, forwarded, expected):
    assert _seen(trusted, peer, forwarded) == expected


def test_anonymous_chat_limit_counts_clients_behind_the_proxy(client):
    """The test client's peer is 127.0.0.1, the default trusted proxy."""
    from wxapp_backend.knowledge_store.api import ANON_LIMIT_PER_MIN

    def ask(addr: str) -> int:
        return client.post("/api/v1/chat", json={"text": "你好"}, headers={"X-Forwarded-For": addr}).status_code

    assert all(ask("203.0.113.7") == 200 for _ in range(ANON_LIMIT_PER_MIN))
    assert ask("203.0.113.7") == 429
    assert ask("203.0.113.8") == 200  # another client behind the same nginx is not held up


def test_an_ipv6_client_is_limited_by_its_64(client):
    """One handset holds a whole /64: rotating addresses inside it does not give it new buckets."""
    from wxapp_backend.knowledge_store.api import ANON_LIMIT_PER_MIN

    codes = [client.post("/api/v1/chat", json={"text": "你好"},
                         headers={"X-Forwarded-For": f"2001:db8:1:2::{i + 1:x}"}).status_code
             for i in range(ANON_LIMIT_PER_MIN + 1)]
    assert codes[:-1] == [200] * ANON_LIMIT_PER_MIN and codes[-1] == 429
    other = client.post("/api/v1/chat", json={"text": "你好"}, headers={"X-Forwarded-For": "2001:db8:1:3::1"})
    assert other.status_code == 200  # the next /64 is someone else


def test_staff_login_spraying_from_one_ipv6_64_is_throttled(client, settings):
    limit = settings.login_max_failures * 4
    codes = [client.post("/api/v1/staff/login", json={"username": f"spray{i}", "password": "Wrong-pass1"},
                         headers={"X-Forwarded-For": f"2001:db8:1:2::{i + 1:x}"}).status_code
             for i in range(limit + 1)]
    assert codes[-1] == 429, codes
