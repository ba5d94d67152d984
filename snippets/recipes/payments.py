"""The payment provider: our HTTP client, and a small stand-in for the provider's API.

The stand-in has the semantics that matter of a real provider (Stripe, Adyen, ...): an
`Idempotency-Key` header that makes a repeated request return the first charge, a lookup of
charges by that key, declines, and a response that can arrive after the client gave up.
"""

# --8<-- [start:client]
import hashlib
import hmac

import requests
from django.conf import settings


class PaymentDeclined(Exception):
    """The provider refused the charge (402): a business outcome, never retried."""


def provider_url() -> str:
    return getattr(settings, "PAYMENTS_URL", "http://127.0.0.1:8765")


def create_charge(idempotency_key: str | None, amount_cents: int, reference: str) -> str:
    """Charge once per key; a timeout means "unknown outcome", not "not charged"."""
    response = requests.post(
        f"{provider_url()}/charges",
        json={"amount": amount_cents, "currency": "eur", "reference": reference},
        headers={"Idempotency-Key": idempotency_key} if idempotency_key else {},
        timeout=getattr(settings, "PAYMENTS_TIMEOUT", 10),
    )
    if response.status_code == 402:
        raise PaymentDeclined(f"{reference}: {response.json()['error']}")
    response.raise_for_status()
    return response.json()["id"]


def find_charge(idempotency_key: str) -> str | None:
    """The charge made with this key, if the provider has one."""
    response = requests.get(
        f"{provider_url()}/charges",
        params={"idempotency_key": idempotency_key},
        timeout=getattr(settings, "PAYMENTS_TIMEOUT", 10),
    )
    response.raise_for_status()
    charges = response.json()["data"]
    return charges[0]["id"] if charges else None


def refund_charge(idempotency_key: str, charge_id: str) -> str:
    """Refund the whole charge, once per key."""
    response = requests.post(
        f"{provider_url()}/refunds",
        json={"charge": charge_id},
        headers={"Idempotency-Key": idempotency_key},
        timeout=getattr(settings, "PAYMENTS_TIMEOUT", 10),
    )
    response.raise_for_status()
    return response.json()["id"]


def signature_is_valid(body: bytes, signature: str) -> bool:
    """A webhook is the provider's only if its body is signed with the shared secret."""
    secret = settings.PAYMENTS_WEBHOOK_SECRET.encode()
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)  # constant time: no timing oracle


# --8<-- [end:client]


# --8<-- [start:provider]
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass
class FakeProvider:
    """The provider's ledger, and the faults a test can inject."""

    charges: list[dict] = field(default_factory=list)
    refunds: list[dict] = field(default_factory=list)
    lookups: int = 0
    decline_over: int | None = None  # decline amounts above this (cents)
    response_delay: float = 0.0  # seconds between booking a charge and answering
    lock: threading.Lock = field(default_factory=threading.Lock)

    def charge(self, key: str | None, body: dict) -> tuple[int, dict]:
        with self.lock:
            for charge in self.charges:
                if key and charge["idempotency_key"] == key:
                    return 200, charge  # the same key: the first charge, not a new one
            if self.decline_over is not None and body["amount"] > self.decline_over:
                return 402, {"error": "card_declined"}
            charge = {"id": f"ch_{len(self.charges) + 1}", "idempotency_key": key, **body}
            self.charges.append(charge)
        time.sleep(self.response_delay)  # booked; the answer may come too late
        return 201, charge

    def find(self, key: str) -> tuple[int, dict]:
        with self.lock:
            self.lookups += 1
            return 200, {"data": [c for c in self.charges if c["idempotency_key"] == key]}

    def refund(self, key: str | None, body: dict) -> tuple[int, dict]:
        with self.lock:
            for refund in self.refunds:
                if key and refund["idempotency_key"] == key:
                    return 200, refund  # the same key: the first refund
            refund = {"id": f"re_{len(self.refunds) + 1}", "idempotency_key": key, **body}
            self.refunds.append(refund)
            return 201, refund

    def webhook(self, event_type: str, charge: dict, secret: str) -> tuple[bytes, str]:
        """The event the provider POSTs to the shop, and its signature (HMAC-SHA256, hex)."""
        body = json.dumps({"type": event_type, "data": charge}).encode()
        return body, hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --8<-- [end:provider]
# --8<-- [start:server]
def serve_provider(provider: FakeProvider, port: int = 0) -> ThreadingHTTPServer:
    """Serve `provider` on 127.0.0.1 in a daemon thread; `server.server_port` is the port."""

    class Handler(BaseHTTPRequestHandler):
        def reply(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            act = provider.refund if self.path == "/refunds" else provider.charge
            self.reply(*act(self.headers.get("Idempotency-Key"), body))

        def do_GET(self) -> None:
            query = parse_qs(urlparse(self.path).query)
            self.reply(*provider.find(query["idempotency_key"][0]))

        def log_message(self, *args: object) -> None:
            pass  # quiet

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --8<-- [end:server]
