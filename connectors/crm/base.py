"""What every CRM connector offers the flows: plain data in, plain data out.

A flow reads ``Page`` objects from ``CrmConnector.iter_pages``, qualifies their leads, asks
``plan_update`` (connectors/crm/writeback.py) what must change, and hands ``LeadUpdate`` and
``TaskSpec`` batches back to the connector. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from leadflow.canonical import Lead
from mappings import CrmMapping
from scoring.tasks import PlannedTask


@dataclass(frozen=True)
class Quarantined:
    """A record that could not become a canonical lead; the reason names the record and field."""

    crm_id: str
    reason: str
    field: str | None = None


@dataclass
class Page:
    """One page of leads read from a CRM: in (modified_at, crm_id) order with a ``cursor``, or, for
    reads in id order (HubSpot's list backfill, Salesforce's Bulk API query), with ``cursor=None``."""

    leads: list[Lead]
    quarantined: list[Quarantined] = field(default_factory=list)
    # crm_id -> {CRM field name: value as the CRM holds it now}, for every writable mapped field
    current: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the highest modification time on the page (the watermark candidate)
    cursor: datetime | None = None


@dataclass(frozen=True)
class FieldChange:
    crm_id: str
    canonical: str
    field: str
    old: Any
    new: Any


@dataclass
class LeadUpdate:
    """The field values to send for one CRM object (a contact/lead, or its company)."""

    crm_id: str  # the lead this update belongs to
    object: str  # "lead" or "company"
    object_id: str
    fields: dict[str, Any]
    changes: list[FieldChange]
    # fields cleared in a batch of their own before ``fields`` are sent (HubSpot's lifecycle stage
    # ignores a set to an earlier stage; a clear and a set in one batch have no order)
    clear_first: list[str] = field(default_factory=list)


# A next-step task, as the qualification policy plans it (``scoring.tasks``): ``key`` is its
# idempotency key, the unique value the CRM upserts it on.
TaskSpec = PlannedTask


@dataclass
class WriteResult:
    succeeded: list[str] = field(default_factory=list)  # crm_ids
    failed: dict[str, str] = field(default_factory=dict)  # crm_id -> reason (names record and field)
    tasks_created: dict[str, str] = field(default_factory=dict)  # task key -> CRM task id
    tasks_existing: dict[str, str] = field(default_factory=dict)  # task key -> CRM task id found, not created
    tasks_closed: list[str] = field(default_factory=list)  # CRM task ids completed as superseded
    closed_for: dict[str, str] = field(default_factory=dict)  # closed CRM task id -> its lead's crm_id
    task_failures: dict[str, str] = field(default_factory=dict)  # task key -> reason
    # crm_id -> (sync marker property, value written with the lead's fields): leadflow's bookkeeping,
    # audited on the lead's write_applied row (HubSpot write fences, state/fences.py)
    markers: dict[str, tuple[str, str]] = field(default_factory=dict)


class CrmConnector(Protocol):
    crm: str
    mapping: CrmMapping

    def iter_pages(self, since: datetime | None, until: datetime | None) -> Iterator[Page]:
        """Leads changed in [since, until), page by page, never the whole set in memory."""

    def fetch_by_ids(self, ids: list[str]) -> Iterator[Page]:
        """Leads by CRM id (``state.pending_ids`` retries); pages carry no watermark cursor."""

    def read_current(self, obj: str, object_ids: list[str], fields: list[str]) -> dict[str, dict[str, Any]]:
        """object id -> {CRM field: value now}, for ``obj`` "lead" or "company", in batch reads
        (compare-before-write: ``flows.pipeline`` drops changes a person made since the page read)."""

    def find_tasks(self, keys: list[str]) -> dict[str, str]:
        """task key -> CRM task id, for the keys whose task exists in the CRM (read only)."""

    def write_updates(self, updates: list[LeadUpdate]) -> WriteResult:
        """Send field updates in the CRM's batch size; per-record failures go to ``failed``."""

    def ensure_tasks(self, tasks: list[TaskSpec], supersede: dict[str, list[str]]) -> WriteResult:
        """Upsert each task whose key has no task in the CRM (an existing one is left as it is);
        ``supersede`` maps crm_id -> task keys that the new task replaces (completed or left, per
        the mapping's ``tasks.supersede``). ``tasks_created``: tasks leadflow made (confirmed now);
        ``tasks_existing``: tasks that were there already."""

    def api_usage(self) -> dict[str, Any]:
        """Calls made by this connector, by endpoint, and the remaining quota if the CRM says."""
