"""Job titles to decision roles and buying-group functions.

Pure keyword rules, shared by the canonical model (which derives ``decision_role`` when a CRM
does not carry one) and the authority criterion in ``scoring/``.
"""

from __future__ import annotations

import re
from functools import lru_cache

_DECISION_MAKER = re.compile(
    r"\b(chief|c[emiofn]o|cmio|cnio|ciso|president|owner|founder|partner|principal|"
    r"vp|svp|evp|vice president|head of|executive director|managing director|administrator|"
    r"practice manager|general manager)\b"
)
_INFLUENCER = re.compile(
    r"\b(director|manager|lead|supervisor|physician|md|do|medical director|"
    r"architect|informatics|pharmacist|counsel|attorney|controller|officer)\b"
)
_USER = re.compile(
    r"\b(nurse|rn|coordinator|specialist|analyst|assistant|technician|associate|scheduler|"
    r"receptionist|biller|coder|staff|clerk|student|intern)\b"
)

# A user keyword with one of these ("Nurse Manager", "Scheduling Supervisor") reads as an influencer.
_MANAGES = re.compile(r"\b(director|manager|supervisor|lead)\b")

_FUNCTIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("compliance", re.compile(r"\b(compliance|privacy|security|ciso|legal|counsel|risk)\b")),
    ("procurement", re.compile(r"\b(procurement|purchasing|supply chain|sourcing|contracts?)\b")),
    ("finance", re.compile(r"\b(cfo|finance|financial|controller|revenue cycle|treasurer)\b")),
    ("physician", re.compile(r"\b(physician|md|do|cmo|cmio|medical director|surgeon|doctor|clinician)\b")),
    (
        "administrator",
        re.compile(r"\b(administrator|coo|ceo|operations|practice manager|president|owner|executive director)\b"),
    ),
)


def _normalize(title: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", " ", title.lower())


@lru_cache(maxsize=4096)
def decision_role_from_title(title: str | None) -> str:
    """decision_maker, influencer, user or unknown."""
    if not title:
        return "unknown"
    text = _normalize(title)
    if _USER.search(text) and not _DECISION_MAKER.search(text) and not _MANAGES.search(text):
        return "user"
    if _DECISION_MAKER.search(text):
        return "decision_maker"
    if _INFLUENCER.search(text):
        return "influencer"
    return "unknown"


@lru_cache(maxsize=4096)
def buying_function_from_title(title: str | None) -> str | None:
    """administrator, physician, procurement, compliance, finance, or None."""
    if not title:
        return None
    text = _normalize(title)
    for function, pattern in _FUNCTIONS:
        if pattern.search(text):
            return function
    return None
