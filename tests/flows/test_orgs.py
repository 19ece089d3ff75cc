from leadflow.canonical import Lead
from state.schema import make_engine
from state.orgs import known_members


def lead(crm_id: str, title: str, company: str = "c1") -> Lead:
    return Lead(crm="salesforce", crm_id=crm_id, job_title=title, crm_company_id=company, company_name="Mercy")


def test_members_seen_on_earlier_pages_join_the_buying_group(database_url):
    engine = make_engine(database_url)
    known_members(engine, "salesforce", [lead("1", "Chief Compliance Officer"), lead("9", "CFO", "c2")], remember=True)
    members = known_members(engine, "salesforce", [lead("2", "VP Operations")], remember=True)
    assert {(m.org_key, m.function) for m in members} == {("id:c1", "compliance"), ("id:c1", "administrator")}

    # a title change replaces what was known about that contact
    known_members(engine, "salesforce", [lead("1", "Registered Nurse")], remember=True)
    members = known_members(engine, "salesforce", [lead("2", "VP Operations")], remember=False)
    assert "compliance" not in {m.function for m in members}

    # a dry run reads but does not remember: later pages see only contacts 1 and 2 at c1
    known_members(engine, "salesforce", [lead("3", "General Counsel")], remember=False)
    later = known_members(engine, "salesforce", [lead("2", "VP Operations")], remember=False)
    assert sorted(str(m.function) for m in later) == ["None", "administrator"]  # the nurse has no buying function
    engine.dispose()
