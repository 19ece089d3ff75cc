"""The qualification domain: pure functions over canonical leads, configured by a YAML model.

    from scoring import load_model, qualify_batch, apply_qualification
    model = load_model()                       # scoring/default_model.yaml, validated and compiled
    results = qualify_batch(leads, now, model) # same order as the input
    lead2 = apply_qualification(lead, results[0])
"""

from scoring.engine import (
    OrgMember,
    Qualification,
    apply_qualification,
    member_of,
    org_key,
    qualify,
    qualify_batch,
    segment_of,
)
from scoring.model import DEFAULT_MODEL_PATH, QualificationModel, load_model
from scoring.next_steps import NextStep, add_business_days, due_date
from scoring.schema import ModelFileError

__all__ = [
    "DEFAULT_MODEL_PATH",
    "ModelFileError",
    "NextStep",
    "OrgMember",
    "Qualification",
    "QualificationModel",
    "add_business_days",
    "apply_qualification",
    "due_date",
    "load_model",
    "member_of",
    "org_key",
    "qualify",
    "qualify_batch",
    "segment_of",
]
