"""The one redaction rule (leadflow/redaction.py)."""

from __future__ import annotations

from leadflow.redaction import REDACTED, describe, problem, shown_value, unknown_value, without_values

TEXT = "my chest hurts since the chemo"


def test_a_problem_says_what_came_never_the_value():
    assert problem("true/false", TEXT) == f"expected true/false, got text of {len(TEXT)} characters"
    assert TEXT not in problem("a number", TEXT)
    assert describe(None) == "nothing" and describe(3.5) == "a number" and describe("  ") == "blank text"


def test_phi_fields_and_patient_free_text_are_redacted_where_values_are_shown():
    assert shown_value("pain_point", TEXT, patient=False) == REDACTED
    assert shown_value("reasons", "fit 80", patient=True) == REDACTED
    assert shown_value("reasons", "fit 80", patient=False) == "fit 80"
    assert shown_value("lead_score", 71, patient=True) == 71


def test_unknown_picklist_values_are_quoted_only_on_b2b_leads():
    assert unknown_value("Hospital System", patient=False) == "'Hospital System'"
    assert unknown_value(TEXT, patient=True) == f"text of {len(TEXT)} characters"


def test_a_crm_error_message_loses_the_values_leadflow_sent():
    message = f'Property values were not valid: "{TEXT}" was not one of the allowed options'
    assert without_values(message, {"pain_point": TEXT, "n": 7}) == \
        'Property values were not valid: "<value>" was not one of the allowed options'
