"""The CRMs' change notifications, as protocol: checking a request and reading its changes. No I/O
beyond the request itself (the receiver, ``flows/listen.py``, stores, coalesces and runs).

- HubSpot webhooks: a JSON array of up to 100 events, signed ``X-HubSpot-Signature-v3``: base64
  HMAC-SHA256, keyed by the app's client secret, over ``method + URI + body + timestamp`` where the
  URI is the full request URL with the escapes of ``: / ? @ ! $ ' ( ) * , ;`` decoded, and
  ``X-HubSpot-Request-Timestamp`` (epoch ms) at most 5 minutes old. A bad signature is answered 401.
- Salesforce Outbound Messages: a SOAP ``notifications`` envelope (namespace
  ``http://soap.sforce.com/2005/09/outbound``) with the ``OrganizationId`` and up to 100
  ``Notification`` elements, each an ``Id`` and an ``sObject``. It is acknowledged with a
  ``notificationsResponse`` holding ``<Ack>true</Ack>``; anything else (a SOAP fault, a non-200)
  makes Salesforce retry, with back-off, for up to 24 hours.

Nothing here logs or returns a field's value in a reason: reasons name the check that failed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from xml.etree import ElementTree

MAX_BODY_BYTES = 1024 * 1024
HUBSPOT_MAX_AGE_MS = 5 * 60 * 1000
HUBSPOT_MAX_EVENTS = 100
SALESFORCE_MAX_NOTIFICATIONS = 100

OUTBOUND_NS = "http://soap.sforce.com/2005/09/outbound"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOBJECT_NS = "urn:sobject.enterprise.soap.sforce.com"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"

HUBSPOT_OBJECTS = {"contact": "contact", "company": "company"}
HUBSPOT_KINDS = {"creation", "propertyChange", "associationChange", "deletion", "merge", "restore"}


class Rejected(Exception):
    """A request leadflow does not accept; ``status`` is the HTTP status the platform expects."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class Change:
    """One notified change: which record, and what the notification says about it."""

    crm: str  # hubspot | salesforce
    object: str  # contact | company (HubSpot); the sObject type (Salesforce)
    object_id: str
    event_id: str
    kind: str  # creation | propertyChange | associationChange | deletion | ... ; Salesforce: change
    occurred_at: datetime | None = None
    property: str | None = None  # HubSpot propertyChange: the property's name ...
    value: str | None = None  # ... and its new value (compared with leadflow's written values, never logged)
    modified_by: str | None = None  # Salesforce: LastModifiedById, when the message carries it
    modstamp: datetime | None = None  # Salesforce: SystemModstamp (or LastModifiedDate)
    related_id: str | None = None  # HubSpot associationChange: the other side's id


# --------------------------------------------------------------------------- HubSpot


# The percent-escapes HubSpot decodes in the URI before signing (its v3 validation instructions).
_SIGNED_URI_ESCAPES = {"%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'",
                       "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";"}
_ESCAPE = re.compile("|".join(_SIGNED_URI_ESCAPES), re.IGNORECASE)


def signed_uri(uri: str) -> str:
    return _ESCAPE.sub(lambda m: _SIGNED_URI_ESCAPES[m.group(0).upper()], uri)


def hubspot_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """The v3 signature HubSpot sends for this request."""
    source = method.upper().encode() + signed_uri(uri).encode() + body + timestamp.encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


def check_hubspot(secret: str, method: str, uri: str, body: bytes, headers: Any, now_ms: int) -> None:
    """Raise ``Rejected(401)`` unless the request carries a valid, fresh v3 signature."""
    signature = headers.get("x-hubspot-signature-v3")
    timestamp = headers.get("x-hubspot-request-timestamp")
    if not signature or not timestamp:
        raise Rejected(401, "hubspot: unsigned request (no X-HubSpot-Signature-v3 / timestamp)")
    try:
        sent_ms = int(timestamp)
    except ValueError:
        raise Rejected(401, "hubspot: X-HubSpot-Request-Timestamp is not epoch milliseconds") from None
    if abs(now_ms - sent_ms) > HUBSPOT_MAX_AGE_MS:
        raise Rejected(401, "hubspot: stale request (timestamp more than 5 minutes off)")
    expected = hubspot_signature(secret, method, uri, body, timestamp)
    if not hmac.compare_digest(expected, signature):
        raise Rejected(401, "hubspot: bad signature")


def parse_hubspot(body: bytes) -> list[Change]:
    """The changes of a webhook batch; events of other objects or kinds are left out."""
    try:
        events = json.loads(body)
    except ValueError:
        raise Rejected(400, "hubspot: body is not JSON") from None
    if not isinstance(events, list) or len(events) > HUBSPOT_MAX_EVENTS:
        raise Rejected(400, f"hubspot: expected a JSON array of at most {HUBSPOT_MAX_EVENTS} events")
    changes = []
    for event in events:
        change = _hubspot_change(event)
        if change is not None:
            changes.append(change)
    return changes


def _hubspot_change(event: Any) -> Change | None:
    if isinstance(event, dict) and "objectId" not in event and "fromObjectId" in event:
        event = {**event, "objectId": event["fromObjectId"]}  # associationChange: from -> to
    if not isinstance(event, dict) or "eventId" not in event or "objectId" not in event:
        raise Rejected(400, "hubspot: an event lacks eventId or objectId")
    obj, _, kind = str(event.get("subscriptionType", "")).partition(".")
    if obj not in HUBSPOT_OBJECTS or kind not in HUBSPOT_KINDS:
        return None
    occurred = event.get("occurredAt")
    value = event.get("propertyValue")
    related = event.get("toObjectId") if kind == "associationChange" else None
    return Change(
        crm="hubspot", object=HUBSPOT_OBJECTS[obj], object_id=str(event["objectId"]), event_id=str(event["eventId"]),
        kind=kind, occurred_at=_from_ms(occurred) if isinstance(occurred, int) else None,
        property=event.get("propertyName"), value=None if value is None else str(value),
        related_id=None if related is None else str(related),
    )


def _from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=timezone.utc)


# --------------------------------------------------------------------------- Salesforce


def parse_salesforce(body: bytes, organization_id: str) -> list[Change]:
    """The changes of an Outbound Message; ``Rejected(403)`` for another organization (Salesforce
    then retries, so a misconfigured org id shows in its outbound message queue)."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise Rejected(400, "salesforce: body is not XML") from None
    notifications = root.find(f"{{{SOAP_NS}}}Body/{{{OUTBOUND_NS}}}notifications")
    if notifications is None:
        raise Rejected(400, "salesforce: no SOAP notifications element")
    org = (notifications.findtext(f"{{{OUTBOUND_NS}}}OrganizationId") or "").strip()
    if not organization_id or not _same_org(org, organization_id):
        raise Rejected(403, "salesforce: OrganizationId is not the configured SALESFORCE_ORG_ID")
    items = notifications.findall(f"{{{OUTBOUND_NS}}}Notification")
    if len(items) > SALESFORCE_MAX_NOTIFICATIONS:
        raise Rejected(400, f"salesforce: more than {SALESFORCE_MAX_NOTIFICATIONS} notifications")
    return [_salesforce_change(item) for item in items]


def _same_org(sent: str, configured: str) -> bool:
    """Salesforce sends the 18-character id; an org id configured in its 15-character form matches
    its first 15 characters."""
    configured = configured.strip()
    return sent == configured or (len(configured) == 15 and sent[:15] == configured)


def _salesforce_change(item: ElementTree.Element) -> Change:
    notification_id = (item.findtext(f"{{{OUTBOUND_NS}}}Id") or "").strip()
    sobject = item.find(f"{{{OUTBOUND_NS}}}sObject")
    if not notification_id or sobject is None:
        raise Rejected(400, "salesforce: a Notification lacks its Id or sObject")
    record_id = (sobject.findtext(f"{{{SOBJECT_NS}}}Id") or "").strip()
    if not record_id:
        raise Rejected(400, f"salesforce: notification {notification_id}: the sObject has no Id")
    kind = (sobject.get(f"{{{XSI_NS}}}type") or "sf:Lead").rpartition(":")[2]
    stamp = sobject.findtext(f"{{{SOBJECT_NS}}}SystemModstamp") or sobject.findtext(f"{{{SOBJECT_NS}}}LastModifiedDate")
    return Change(crm="salesforce", object=kind, object_id=record_id, event_id=notification_id, kind="change",
                  modified_by=(sobject.findtext(f"{{{SOBJECT_NS}}}LastModifiedById") or "").strip() or None,
                  modstamp=_sf_datetime(stamp))


def _sf_datetime(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def salesforce_ack() -> bytes:
    """The ``notificationsResponse`` Salesforce waits for: every notification of the message acknowledged."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>'
            f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body>'
            f'<notificationsResponse xmlns="{OUTBOUND_NS}"><Ack>true</Ack></notificationsResponse>'
            f'</soapenv:Body></soapenv:Envelope>').encode()


def salesforce_fault(reason: str) -> bytes:
    """A SOAP fault (sent with a 500): Salesforce keeps the message and retries it."""
    from xml.sax.saxutils import escape

    return (f'<?xml version="1.0" encoding="UTF-8"?>'
            f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}"><soapenv:Body><soapenv:Fault>'
            f'<faultcode>soapenv:Client</faultcode><faultstring>{escape(reason)}</faultstring>'
            f'</soapenv:Fault></soapenv:Body></soapenv:Envelope>').encode()

