"""The one redaction rule: what of a CRM value may appear in a log line, a reason, a pending row, a
preview, an artifact or the audit log.

- A parse or validation problem never quotes the value: it says what was expected and describes
  what came (``expected true/false, got text of 41 characters``). A field that should hold a
  number may hold a patient's sentence; the description tells revops enough to find it in the CRM.
- Values of fields that can carry health information (``PHI_FIELDS``) and leadflow's free-text
  outputs on patient leads are written as ``REDACTED`` wherever a value is shown.
- A CRM's error message is stripped of the values leadflow sent (``without_values``).
- An unknown picklist value is quoted only on a B2B lead (revops needs it to extend a value map);
  on a patient lead it is described like any other value.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

# Canonical fields whose values may be health information.
PHI_FIELDS = frozenset(
    {"pain_point", "patient.service_requested", "patient.payer", "patient.zip", "patient.scheduling_ready"}
)
# leadflow's own free-text outputs, which describe a patient when the lead is one.
PATIENT_TEXT_OUTPUTS = frozenset({"reasons", "reasons_detail", "next_step"})
REDACTED = "<redacted: may contain health information>"


def describe(value: Any) -> str:
    """What a value is, never what it says: ``text of 41 characters``, ``a number``, ``empty``."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a true/false value"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (datetime, date)):
        return "a date"
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    text = str(value)
    if not text.strip():
        return "blank text"
    return f"text of {len(text)} character{'s' if len(text) != 1 else ''}"


def problem(expected: str, value: Any) -> str:
    """A parse problem in the house style: what was expected and what came, never the value."""
    return f"expected {expected}, got {describe(value)}"


def shown_value(canonical_field: str, value: Any, patient: bool) -> Any:
    """A value as it may be shown (audit, preview): PHI fields and patient free text redacted."""
    if value in (None, ""):
        return value
    if canonical_field in PHI_FIELDS or (patient and canonical_field in PATIENT_TEXT_OUTPUTS):
        return REDACTED
    return value


def unknown_value(value: Any, patient: bool) -> str:
    """An unknown picklist value in a warning: quoted (shortened) on a B2B lead, described otherwise."""
    if patient:
        return describe(value)
    return repr(str(value)[:60])


def without_values(message: str, values: Any) -> str:
    """A CRM's error message with every value leadflow sent replaced by ``<value>``: CRMs quote
    the rejected value (``"x" was not one of the allowed options``), and a reason must not."""
    sent = values.values() if isinstance(values, dict) else values
    for value in sorted({str(v) for v in sent if v not in (None, "") and len(str(v)) >= 3}, key=len, reverse=True):
        message = message.replace(value, "<value>")
    return message
