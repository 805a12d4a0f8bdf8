"""Completion callbacks of screening jobs: address checks, signing, redirects, retries with backoff, DNS rebinding."""

from __future__ import annotations

import json
import threading

import pytest

from screening.models import ScreeningJob
from tests.screening_support import URL, submit

pytestmark = pytest.mark.django_db(transaction=True)


def test_callback_to_a_private_address_is_refused(api, fake_openai):
    response = submit(api, callback_url="http://127.0.0.1:9/hook")
    assert response.status_code == 400 and "callback_url" in response.json()["errors"]
    assert submit(api, callback_url="ftp://example.org/x").status_code == 400


def test_completion_callback_is_signed_and_recorded(api, fake_openai, run_queue, settings):
    settings.CRYSTALLISE_CALLBACK_ALLOW_PRIVATE = True  # the receiver below listens on loopback
    import hashlib
    import hmac
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from crystallise.callbacks import secret

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers["X-Crystallise-Signature"], body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        job = submit(api, callback_url=url).json()
        run_queue()
    finally:
        server.shutdown()
    signature, body = received[0]
    t, v1 = (part.split("=", 1)[1] for part in signature.split(","))
    assert hmac.compare_digest(v1, hmac.new(secret(), f"{t}.".encode() + body, hashlib.sha256).hexdigest())
    assert json.loads(body)["status"] == "completed" and json.loads(body)["id"] == job["id"]
    assert api.get(f"{URL}/{job['id']}").json()["callback_status"] == "delivered"
    assert api.get(f"{URL}/{job['id']}").json()["callback_error"] is None


def test_a_callback_redirect_is_not_followed_and_the_failure_is_recorded(api, fake_openai, run_queue, settings):
    """A receiver answering 302 cannot send the service's request anywhere else (an address nobody checked)."""
    settings.CRYSTALLISE_CALLBACK_ALLOW_PRIVATE = True
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(("POST", self.path))
            self.send_response(302 if self.path == "/hook" else 500)
            self.send_header("Location", "/internal")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self):
            seen.append(("GET", self.path))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        job = submit(api, callback_url=f"http://127.0.0.1:{server.server_port}/hook").json()
        run_queue()
        from screening.services import callback_deliver

        body = api.get(f"{URL}/{job['id']}").json()
        assert body["callback_status"] == "failed"
        assert body["callback_error"] == "The receiver answered HTTP 302 (redirects are not followed)."
        assert set(seen) == {("POST", "/hook")}  # retried, never redirected
        ScreeningJob.objects.filter(pk=job["id"]).update(callback_url=f"http://127.0.0.1:{server.server_port}/boom")
        callback_deliver(job_id=job["id"])
        assert api.get(f"{URL}/{job['id']}").json()["callback_error"] == "The receiver answered HTTP 500."
    finally:
        server.shutdown()


def test_a_failed_callback_is_retried_after_the_configured_backoff(settings):
    """CRYSTALLISE_CALLBACK_BACKOFF seconds before the second attempt, twice that before the third."""
    import time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from crystallise import callbacks

    settings.CRYSTALLISE_CALLBACK_ALLOW_PRIVATE = True
    settings.CRYSTALLISE_CALLBACK_BACKOFF = 0.1
    arrivals = []

    class Unavailable(BaseHTTPRequestHandler):
        def do_POST(self):
            arrivals.append(time.monotonic())
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        outcome = callbacks.deliver(f"http://127.0.0.1:{server.server_port}/hook", {"id": "1"})
    finally:
        server.shutdown()
    assert outcome == (False, 3, "The receiver answered HTTP 503.")
    first_wait, second_wait = arrivals[1] - arrivals[0], arrivals[2] - arrivals[1]
    # Upper bounds well under the 2 s / 4 s a default backoff would wait.
    assert 0.1 <= first_wait < 1.5 and 0.2 <= second_wait < 1.5, (first_wait, second_wait)


def test_a_callback_connects_only_to_the_address_it_checked(monkeypatch, settings):
    """DNS rebinding: the name resolves to a public address when checked, to loopback a moment later."""
    import socket

    from crystallise import callbacks

    settings.CRYSTALLISE_CALLBACK_ALLOW_PRIVATE = False
    answers = iter([[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80))]]
                   + [[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 80))]] * 5)
    connected = []

    class Network:
        SOCK_STREAM, gaierror = socket.SOCK_STREAM, socket.gaierror

        @staticmethod
        def getaddrinfo(host, port, type=0):
            return next(answers)

        @staticmethod
        def create_connection(address, timeout=None):
            connected.append(address)
            raise ConnectionRefusedError("refused")

    monkeypatch.setattr(callbacks, "socket", Network)
    delivered, attempts, error = callbacks.deliver("http://hook.example.org/x", {"id": "1"})
    assert connected == [("93.184.216.34", 80)]  # the checked address, never the rebound one
    assert (delivered, attempts) == (False, 1) and error.startswith("Not sent: callback_url must point to a public")
