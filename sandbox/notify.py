"""The sandbox's change notifications, as the real platforms send them, to a configured URL.

- HubSpot: webhook batches (a JSON array of up to 100 events: ``contact.creation``,
  ``contact.propertyChange`` with ``propertyName``/``propertyValue``, the same for companies), signed
  ``X-HubSpot-Signature-v3`` (base64 HMAC-SHA256 with the app secret over method + decoded URI + body
  + ``X-HubSpot-Request-Timestamp``), POSTed to ``<url>/webhooks/hubspot``; a failed delivery is
  retried, re-signed, with ``attemptNumber`` counting up.
- Salesforce: Outbound Messages (SOAP ``notifications`` with ``OrganizationId``, ``ActionId`` and up to
  100 ``Notification`` elements: ``Id`` and an ``sObject`` with ``Id``, ``LastModifiedById`` and
  ``SystemModstamp``) for Lead inserts and updates, POSTed to ``<url>/webhooks/salesforce``; a delivery
  is done only when answered 200 with ``<Ack>true</Ack>``, else retried.

Changes made through the API and by the seed/test helpers (``Table.insert``/``update``) are
notified; a bulk seed load is not. Deliveries go out after a short delay (changes of that moment in
one batch), to loopback addresses only, with a bounded number of attempts. Nothing is sent until a
URL is set (``sandbox serve --notify-url``, ``POST /_sandbox/notify``, ``SandboxHandle.set_notify``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

from sandbox.store import iso_sf, now_ms

log = logging.getLogger("sandbox.notify")

DEFAULT_SECRET = "sandbox-app-secret"
APP_ID = 424242
MAX_BATCH = 100
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
HUBSPOT_OBJECTS = {"contacts": "contact", "companies": "company"}
SALESFORCE_OBJECTS = {"Lead"}
SALESFORCE_OM_FIELDS = ("Id", "LastModifiedById", "SystemModstamp")
ACTION_ID = "04k5g000000CaRkAAK"
OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"


@dataclass
class _Delivery:
    platform: str  # hubspot | salesforce
    items: list[Any]
    due: float
    attempt: int = 0


@dataclass
class NotifySettings:
    url: str | None = None
    hubspot_secret: str = DEFAULT_SECRET
    delay_s: float = 0.2  # a change is sent this long after it is made (HubSpot batches a moment's changes)
    retry_delays_s: tuple[float, ...] = (0.5, 1.0, 2.0)  # then the delivery is dropped (the real ones retry for a day)
    sent: dict[str, int] = field(default_factory=lambda: {"hubspot": 0, "salesforce": 0, "failed": 0, "dropped": 0})


class Notifier:
    """Watches the sandbox's tables and delivers their changes as webhooks / Outbound Messages."""

    def __init__(self, sandbox: Any):
        self.sandbox = sandbox
        self.settings = NotifySettings()
        self._ids = itertools.count(1)
        self._pending: dict[str, list[Any]] = {"hubspot": [], "salesforce": []}
        self._first: dict[str, float | None] = {"hubspot": None, "salesforce": None}
        self._retries: list[_Delivery] = []
        self._in_flight = 0  # deliveries taken from the queue whose POST has not been answered yet
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        for name, table in sandbox.hubspot.tables.items():
            if name in HUBSPOT_OBJECTS:
                table.on_write = self._hubspot_write
        for name, table in sandbox.salesforce.tables.items():
            if name in SALESFORCE_OBJECTS:
                table.on_write = self._salesforce_write

    # -- configuration ----------------------------------------------------------------------------
    def configure(self, url: str | None, hubspot_secret: str | None = None, delay_s: float | None = None,
                  retry_delays_s: list[float] | None = None) -> None:
        """Where to send, the HubSpot app secret, the batching delay and the waits between the
        attempts of a failed delivery (one more attempt per wait, then it is dropped)."""
        if url:
            host = urlsplit(url).hostname or ""
            if host not in LOOPBACK:
                raise ValueError(f"notify url: the sandbox only notifies loopback addresses, not {host!r}")
        with self._cond:
            self.settings.url = url.rstrip("/") if url else None
            if hubspot_secret:
                self.settings.hubspot_secret = hubspot_secret
            if delay_s is not None:
                self.settings.delay_s = max(0.0, delay_s)
            if retry_delays_s is not None:
                self.settings.retry_delays_s = tuple(max(0.0, float(wait)) for wait in retry_delays_s)
            if self.settings.url and self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sandbox-notify", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def describe(self) -> dict[str, Any]:
        with self._cond:
            return {"url": self.settings.url, "delay_s": self.settings.delay_s,
                    "retry_delays_s": list(self.settings.retry_delays_s), "sent": dict(self.settings.sent),
                    "queued": sum(len(v) for v in self._pending.values()) + len(self._retries),
                    "in_flight": self._in_flight}

    # -- what changed -----------------------------------------------------------------------------
    def _hubspot_write(self, table: str, record_id: str, fields: dict[str, Any], created: bool) -> None:
        if self.settings.url is None:
            return
        obj = HUBSPOT_OBJECTS[table]
        occurred = now_ms()
        base = {"subscriptionId": 1, "portalId": self.sandbox.hubspot.portal_id, "appId": APP_ID,
                "occurredAt": occurred, "attemptNumber": 0, "objectId": int(record_id), "changeSource": "API"}
        events = [{**base, "eventId": next(self._ids), "subscriptionType": f"{obj}.creation", "changeFlag": "NEW"}] \
            if created else []
        if not created:
            for name, value in fields.items():
                events.append({**base, "eventId": next(self._ids), "subscriptionType": f"{obj}.propertyChange",
                               "propertyName": name, "propertyValue": "" if value is None else str(value)})
        self._queue("hubspot", events)

    def _salesforce_write(self, table: str, record_id: str, fields: dict[str, Any], created: bool) -> None:
        if self.settings.url is None:
            return
        self._queue("salesforce", [(table, record_id)])

    def _queue(self, platform: str, items: list[Any]) -> None:
        if not items:
            return
        with self._cond:
            self._pending[platform].extend(items)
            if self._first[platform] is None:
                self._first[platform] = time.monotonic()
            self._cond.notify_all()

    # -- delivery ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            delivery = self._next_delivery()
            self._deliver(delivery)

    def _next_delivery(self) -> _Delivery:
        with self._cond:
            while True:
                now = time.monotonic()
                for platform, first in self._first.items():
                    if first is not None and now >= first + self.settings.delay_s:
                        items = self._pending[platform][:MAX_BATCH]
                        del self._pending[platform][:MAX_BATCH]
                        self._first[platform] = now if self._pending[platform] else None
                        self._in_flight += 1
                        return _Delivery(platform, items, now)
                due = [d for d in self._retries if d.due <= now]
                if due:
                    self._retries.remove(due[0])
                    self._in_flight += 1
                    return due[0]
                waits = [first + self.settings.delay_s - now for first in self._first.values() if first is not None]
                waits += [d.due - now for d in self._retries]
                self._cond.wait(max(0.005, min(waits)) if waits else None)

    def _deliver(self, delivery: _Delivery) -> None:
        """POST one delivery; then count it sent, or queue its next attempt, or drop it."""
        import httpx

        url = self.settings.url
        if url is None:
            with self._cond:
                self._in_flight -= 1
            return
        try:
            if delivery.platform == "hubspot":
                ok = self._post_hubspot(httpx, url, delivery)
            else:
                ok = self._post_salesforce(httpx, url, delivery)
        except httpx.HTTPError as exc:
            log.info("%s notification: %s", delivery.platform, type(exc).__name__)
            ok = False
        with self._cond:
            self._in_flight -= 1
            if ok:
                self.settings.sent[delivery.platform] += len(delivery.items)
                return
            self.settings.sent["failed"] += 1
            if delivery.attempt < len(self.settings.retry_delays_s):
                delivery.due = time.monotonic() + self.settings.retry_delays_s[delivery.attempt]
                delivery.attempt += 1
                self._retries.append(delivery)
                self._cond.notify_all()
            else:
                self.settings.sent["dropped"] += len(delivery.items)

    def _post_hubspot(self, httpx: Any, url: str, delivery: _Delivery) -> bool:
        endpoint = f"{url}/webhooks/hubspot"
        body = json.dumps([{**e, "attemptNumber": delivery.attempt} for e in delivery.items]).encode()
        timestamp = str(int(time.time() * 1000))
        source = b"POST" + unquote(endpoint).encode() + body + timestamp.encode()
        signature = base64.b64encode(hmac.new(self.settings.hubspot_secret.encode(), source, hashlib.sha256).digest())
        response = httpx.post(endpoint, content=body, timeout=10, headers={
            "Content-Type": "application/json", "X-HubSpot-Signature-v3": signature.decode(),
            "X-HubSpot-Request-Timestamp": timestamp, "X-HubSpot-Signature-Version": "v3"})
        return 200 <= response.status_code < 300

    def _post_salesforce(self, httpx: Any, url: str, delivery: _Delivery) -> bool:
        from sandbox.salesforce import ORG_ID

        org = self.sandbox.salesforce
        notifications = []
        with self.sandbox.lock:
            for obj, record_id in dict.fromkeys(delivery.items):  # one notification per record and delivery
                table = org.tables[obj]
                if record_id not in table:
                    continue
                record = table.records[record_id]
                fields = {"Id": record_id, "LastModifiedById": record.get("LastModifiedById", ""),
                          "SystemModstamp": iso_sf(table.modified[record_id])}
                notifications.append((f"04l5g{next(self._ids):013d}", obj, fields))
        if not notifications:
            return True
        body = outbound_message(ORG_ID, ACTION_ID, notifications, url)
        response = httpx.post(f"{url}/webhooks/salesforce", content=body, timeout=10,
                              headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'})
        return response.status_code == 200 and b"<Ack>true</Ack>" in response.content


def outbound_message(organization_id: str, action_id: str, notifications: list[tuple[str, str, dict[str, str]]],
                     server_url: str = "") -> bytes:
    """A SOAP ``notifications`` envelope: ``(notification id, sObject type, {field: value})`` each."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>'
             '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
             'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
             f'<soapenv:Body><notifications xmlns="{OUTBOUND_NS}">'
             f'<OrganizationId>{escape(organization_id)}</OrganizationId><ActionId>{escape(action_id)}</ActionId>'
             '<SessionId xsi:nil="true"/>'
             f'<EnterpriseUrl>{escape(server_url)}/services/Soap/c/59.0/{escape(organization_id[:15])}</EnterpriseUrl>'
             f'<PartnerUrl>{escape(server_url)}/services/Soap/u/59.0/{escape(organization_id[:15])}</PartnerUrl>']
    for notification_id, sobject_type, fields in notifications:
        parts.append(f'<Notification><Id>{escape(notification_id)}</Id>'
                     f'<sObject xsi:type="sf:{escape(sobject_type)}" xmlns:sf="{SOBJECT_NS}">')
        parts.extend(f"<sf:{name}>{escape(str(value))}</sf:{name}>" for name, value in fields.items())
        parts.append("</sObject></Notification>")
    parts.append("</notifications></soapenv:Body></soapenv:Envelope>")
    return "".join(parts).encode()
