"""Signed job-completion callbacks (HMAC-SHA256), with retries.

Header `X-Crystallise-Signature: t=<unix time>,v1=<hex>` where hex is
HMAC-SHA256(secret, "<t>.<raw body>"); the secret is
`CRYSTALLISE_CALLBACK_SECRET` (derived from `DJANGO_SECRET_KEY` when unset).
Receivers recompute it and compare in constant time, and reject stale `t`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
import urllib.error
import urllib.parse
import urllib.request

from django.conf import settings

logger = logging.getLogger(__name__)

ATTEMPTS = 3
TIMEOUT = 10


def check_url(url: str) -> str | None:
    """Why `url` may not receive callbacks, or None when it may.

    Callbacks are requests the server makes on a client's behalf: unless
    `CRYSTALLISE_CALLBACK_ALLOW_PRIVATE` is set, they may only go to public
    addresses (no loopback, private, link-local or reserved ranges), checked
    at submission and again at delivery (DNS may change in between).
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return "callback_url must be an http(s) URL."
    if settings.CRYSTALLISE_CALLBACK_ALLOW_PRIVATE:
        return None
    try:
        infos = socket.getaddrinfo(parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80))
    except (socket.gaierror, UnicodeError):
        return f"callback_url host {parsed.hostname!r} does not resolve."
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            return f"callback_url must point to a public address ({parsed.hostname} is {address})."
    return None


def secret() -> bytes:
    value = settings.CRYSTALLISE_CALLBACK_SECRET or hashlib.sha256(
        b"crystallise-callback:" + settings.SECRET_KEY.encode()).hexdigest()
    return value.encode()


def sign(body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not an instruction: following it would reach an address nobody checked."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def deliver(url: str, payload: dict, *, backoff: float = 2.0) -> tuple[bool, int, str | None]:
    """POST the payload; returns (delivered, attempts, why it failed). 2xx is success; other answers are retried.

    Redirects are not followed (a 3xx is a failure), so the address checked is the address reached.
    """
    body = json.dumps(payload, default=str).encode()
    if (problem := check_url(url)) is not None:
        logger.warning("Callback not sent: %s", problem)
        return False, 0, f"Not sent: {problem}"
    error = None
    for attempt in range(1, ATTEMPTS + 1):
        timestamp = int(time.time())
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json",
            "User-Agent": "Crystallise-Callback/1",
            "X-Crystallise-Signature": sign(body, timestamp),
        })
        try:
            with _OPENER.open(request, timeout=TIMEOUT) as response:
                if 200 <= response.status < 300:
                    return True, attempt, None
                error = f"The receiver answered HTTP {response.status}."
        except urllib.error.HTTPError as exc:
            moved = " (redirects are not followed)" if 300 <= exc.code < 400 else ""
            error = f"The receiver answered HTTP {exc.code}{moved}."
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            error = f"Could not reach the receiver: {reason}."
        logger.warning("Callback to %s failed (attempt %d): %s", url, attempt, error)
        if attempt < ATTEMPTS:
            time.sleep(backoff * (2 ** (attempt - 1)))
    return False, ATTEMPTS, error
