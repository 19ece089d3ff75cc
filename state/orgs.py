"""Organization membership in the state store: who else leadflow has seen at each organization.

Scoring a page with only the contacts on that page would make a lead's buying-group signals (and so
its score) depend on paging; with the stored members, they depend on every contact seen so far.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine, select

from state.leads import upsert
from leadflow.canonical import Lead
from state.schema import org_members
from scoring import OrgMember, member_of

_CHUNK = 500


def known_members(engine: Engine, crm: str, leads: Sequence[Lead], remember: bool) -> list[OrgMember]:
    """Every known member of the leads' organizations, the leads included; with ``remember``, the
    leads are stored first (one upsert), so later pages and runs see them too."""
    page = {lead.crm_id: m for lead in leads if (m := member_of(lead)) is not None}
    if not page:
        return []
    if remember:
        _store(engine, crm, page)
    keys = sorted({m.org_key for m in page.values()})
    found: dict[str, OrgMember] = {}
    with engine.connect() as conn:
        for start in range(0, len(keys), _CHUNK):
            rows = conn.execute(
                select(org_members.c.crm_id, org_members.c.org_key, org_members.c.function,
                       org_members.c.decision_maker)
                .where(org_members.c.crm == crm, org_members.c.org_key.in_(keys[start:start + _CHUNK])))
            for crm_id, key, function, decision_maker in rows:
                found[crm_id] = OrgMember(key, function, bool(decision_maker))
    found.update(page)
    return list(found.values())


def _store(engine: Engine, crm: str, page: dict[str, OrgMember]) -> None:
    rows = [{"crm": crm, "crm_id": crm_id, "org_key": m.org_key, "function": m.function,
             "decision_maker": int(m.decision_maker)} for crm_id, m in page.items()]
    upsert(engine, org_members, rows, ["crm", "crm_id"])
