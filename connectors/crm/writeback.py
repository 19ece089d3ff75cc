"""What to write back: only fields whose value differs, honouring each field's write policy.

``plan_update(lead, current, written, mapping)``:

- ``lead``: the qualified lead (outputs set, enriched firmographics set);
- ``current``: ``Page.current[lead.crm_id]`` - the CRM's values now, keyed by
  ``convert.current_key`` (the field name; ``company.<field>`` for a HubSpot company field);
- ``written``: what leadflow last wrote to that lead, same keys (``state.written_values``).

Policies: ``always`` writes when different; ``if_blank`` fills only empty fields;
``never_over_manual`` never overwrites a value a person changed (current non-blank and different
from what leadflow last wrote; non-blank and never written by leadflow counts as manual).

A field absent from ``current`` (the connector does not read it, e.g. a write-only long text on
Salesforce, where two long-text fields in a query cut its batches to 200 rows) is compared with
the value leadflow last wrote.

``native_stage`` (the stage in the CRM's own field, ``mappings.NativeStages``): never over a
sales-owned value or a status leadflow reads as a rep's; otherwise like ``never_over_manual``,
except that a value leadflow never wrote counts as the CRM's default when it is one leadflow's map
writes (a new contact's ``lead``, a new Salesforce lead's ``Open - Not Contacted``) and the move is
forward: leadflow moves a stage back only from a value it set itself. A move the
field only takes after a clear (HubSpot's lifecycle stage going back) becomes two changes of one
update, the clear first: the connector sends the clear in its own batch, then the set.

Stamp fields (``scored_at``) change on every scoring; they are written only together with another
change to the same object, so an unchanged lead is never written (and never re-read as changed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from connectors.crm.base import FieldChange, LeadUpdate
from connectors.crm.convert import canonical_value, current_key, is_blank, to_crm_value, values_equal
from leadflow.canonical import Lead
from mappings import NATIVE_STAGE, CrmMapping, FieldMapping, NativeStages

STAMP_FIELDS = frozenset({"scored_at"})


def _allowed(fm: FieldMapping, current: Any, last_written: Any, ever_written: bool) -> bool:
    if fm.policy == "always" or is_blank(current):
        return True
    if fm.policy == "if_blank":
        return False
    # never_over_manual: current is non-blank here
    if not ever_written:
        return False
    return values_equal(fm, current, last_written)


def _native_allowed(native: NativeStages, fm: FieldMapping, current: Any, last_written: Any,
                    ever_written: bool, backward: bool) -> bool:
    if is_blank(current):
        return True
    value = str(current)
    if native.write is not None and value in native.write.sales_owned:
        return False  # sales moved it on (opportunity, customer): never moved back
    if native.read is not None and native.read.field.lower() == fm.field.lower() and value in native.read.statuses():
        return False  # a rep's status (Salesforce: the same field): leadflow obeys it
    if ever_written:
        return values_equal(fm, current, last_written)
    # never written by leadflow: the CRM's default (or a form's) when it is a value leadflow writes,
    # moved on forward only - leadflow moves a stage back only from a value it set itself
    return value in (fm.values or {}).values() and not backward


def _target(mapping: CrmMapping, fm: FieldMapping, lead: Lead) -> tuple[str, str | None]:
    separate_company = mapping.objects.get("company") != mapping.objects.get("lead")
    if fm.object == "company" and separate_company:
        return "company", lead.crm_company_id
    return "lead", lead.crm_id


def plan_update(
    lead: Lead,
    current: Mapping[str, Any] | None,
    written: Mapping[str, Any] | None,
    mapping: CrmMapping,
) -> list[LeadUpdate]:
    """The ``LeadUpdate``s (lead object first, then its company) with only the changed fields."""
    current = current or {}
    written = written or {}
    groups: dict[tuple[str, str], tuple[dict[str, Any], list[FieldChange], bool]] = {}
    clears: dict[tuple[str, str], list[str]] = {}  # fields cleared (own batch) before the set
    for name, fm in mapping.writable().items():
        new = to_crm_value(mapping.crm, name, fm, canonical_value(lead, name))
        if new is None:
            continue
        key = current_key(mapping, fm)
        old = current[key] if key in current else written.get(key)  # not read: last written value
        if values_equal(fm, old, new):
            continue
        backward = name == NATIVE_STAGE and mapping.native_stages.write.is_backward(old, new)
        if fm.policy == "native_stage":
            if not _native_allowed(mapping.native_stages, fm, old, written.get(key), key in written, backward):
                continue
        elif not _allowed(fm, old, written.get(key), key in written):
            continue
        obj, object_id = _target(mapping, fm, lead)
        if not object_id:
            continue
        fields, changes, substantive = groups.setdefault((obj, object_id), ({}, [], False))
        fields[fm.field] = new
        if backward:
            clears.setdefault((obj, object_id), []).append(fm.field)
            changes.append(FieldChange(crm_id=lead.crm_id, canonical=name, field=key, old=old, new=None))
            old = None
        changes.append(FieldChange(crm_id=lead.crm_id, canonical=name, field=key, old=old, new=new))
        if name not in STAMP_FIELDS:
            groups[(obj, object_id)] = (fields, changes, True)
    updates = [
        LeadUpdate(crm_id=lead.crm_id, object=obj, object_id=object_id, fields=fields, changes=changes,
                   clear_first=clears.get((obj, object_id), []))
        for (obj, object_id), (fields, changes, substantive) in groups.items()
        if substantive
    ]
    updates.sort(key=lambda u: u.object != "lead")
    return updates


def plan_updates(
    leads: Iterable[Lead],
    current: Mapping[str, Mapping[str, Any]],
    written: Mapping[str, Mapping[str, Any]] | None,
    mapping: CrmMapping,
) -> list[LeadUpdate]:
    """``plan_update`` for a page of leads (``current`` = ``Page.current``)."""
    written = written or {}
    out: list[LeadUpdate] = []
    for lead in leads:
        out.extend(plan_update(lead, current.get(lead.crm_id), written.get(lead.crm_id), mapping))
    return out
