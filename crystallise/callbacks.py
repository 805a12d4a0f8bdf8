"""Signed job-completion callbacks (HMAC-SHA256), with retries.

Header `X-Crystallise-Signature: t=<unix time>,v1=<hex>` where hex is
HMAC-SHA256(secret, "<t>.<raw body>"); the secret is
`CRYSTALLISE_CALLBACK_SECRET` (derived from `DJANGO_SECRET_KEY` when unset).
Receivers recompute it and compare in constant time, and reject stale `t`.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import time
import urllib.parse

from django.conf import settings

logger = logging.getLogger(__name__)

ATTEMPTS = 3
TIMEOUT = 10


def resolve(url: str) -> tuple[str | None, str | None]:
    """(address to connect to, None), or (None, why `url` may not receive callbacks).

    Callbacks are requests the server makes on a client's behalf: unless
    `CRYSTALLISE_CALLBACK_ALLOW_PRIVATE` is set, they may only go to public
    addresses (no loopback, private, link-local or reserved ranges), checked
    at submission and again at delivery. At delivery the connection goes to
    the address that was checked, so a name that resolves differently a
    moment later (DNS rebinding) cannot redirect it.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None, "callback_url must be an http(s) URL."
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        infos = socket.getaddrinfo(parsed.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError):
        return None, f"callback_url host {parsed.hostname!r} does not resolve."
    addresses = [info[4][0] for info in infos]
    if not addresses:
        return None, f"callback_url host {parsed.hostname!r} does not resolve."
    if not settings.CRYSTALLISE_CALLBACK_ALLOW_PRIVATE:
        for address in addresses:
            if not ipaddress.ip_address(address.split("%")[0]).is_global:
                return None, f"callback_url must point to a public address ({parsed.hostname} is {address})."
    return addresses[0], None


def check_url(url: str) -> str | None:
    """Why `url` may not receive callbacks, or None when it may."""
    return resolve(url)[1]


def secret() -> bytes:
    value = settings.CRYSTALLISE_CALLBACK_SECRET or hashlib.sha256(
        b"crystallise-callback:" + settings.SECRET_KEY.encode()).hexdigest()
    return value.encode()


def sign(body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was checked; the URL's host name stays in the Host header."""

    def __init__(self, host: str, port: int | None, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As above over TLS: the certificate is still verified for the URL's host name."""

    def __init__(self, host: str, port: int | None, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def _post(url: str, address: str, body: bytes, headers: dict[str, str]) -> int:
    """One POST to `url` over a connection to `address`; the status. Redirects are answers, never followed."""
    parsed = urllib.parse.urlsplit(url)
    kind = _PinnedHTTPSConnection if parsed.scheme == "https" else _PinnedHTTPConnection
    connection = kind(parsed.hostname, parsed.port, address=address, timeout=TIMEOUT)
    try:
        path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(64 * 1024)
        return response.status
    finally:
        connection.close()


def deliver(url: str, payload: dict) -> tuple[bool, int, str | None]:
    """POST the payload; returns (delivered, attempts, why it failed). 2xx is success; other answers are retried
    after CRYSTALLISE_CALLBACK_BACKOFF seconds, doubling per attempt.

    Redirects are not followed (a 3xx is a failure), and each attempt connects to the address
    checked just before it, so the address checked is the address reached.
    """
    body = json.dumps(payload, default=str).encode()
    error = None
    for attempt in range(1, ATTEMPTS + 1):
        address, problem = resolve(url)
        if problem is not None:
            logger.warning("Callback not sent: %s", problem)
            return False, attempt - 1, f"Not sent: {problem}"
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Crystallise-Callback/1",
            "X-Crystallise-Signature": sign(body, timestamp),
        }
        try:
            status = _post(url, address, body, headers)
            if 200 <= status < 300:
                return True, attempt, None
            moved = " (redirects are not followed)" if 300 <= status < 400 else ""
            error = f"The receiver answered HTTP {status}{moved}."
        except (OSError, http.client.HTTPException, ValueError) as exc:
            error = f"Could not reach the receiver: {exc or type(exc).__name__}."
        logger.warning("Callback to %s failed (attempt %d): %s", url, attempt, error)
        if attempt < ATTEMPTS:
            time.sleep(settings.CRYSTALLISE_CALLBACK_BACKOFF * (2 ** (attempt - 1)))
    return False, ATTEMPTS, error
