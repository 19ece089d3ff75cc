"""Job titles to decision roles and buying-group functions (leadflow/titles.py)."""

import pytest

from leadflow.titles import buying_function_from_title, decision_role_from_title


@pytest.mark.parametrize(
    ("title", "role", "function"),
    [
        ("Chief Information Officer", "decision_maker", None),
        ("Practice Administrator", "decision_maker", "administrator"),
        ("VP Revenue Cycle", "decision_maker", "finance"),
        ("CFO", "decision_maker", "finance"),
        ("Clinic Operations Manager", "influencer", "administrator"),
        ("Medical Director", "influencer", "physician"),
        ("Director of Procurement", "influencer", "procurement"),
        ("Compliance Officer", "influencer", "compliance"),
        ("Nurse Manager", "influencer", None),
        ("Registered Nurse", "user", None),
        ("Medical Student", "user", None),
        ("Scheduler", "user", None),
        ("", "unknown", None),
        (None, "unknown", None),
    ],
)
def test_titles(title, role, function):
    assert decision_role_from_title(title) == role
    assert buying_function_from_title(title) == function
