"""The CMS Provider of Services file as a reference-file format, on a small file written by the test
in that format (its documented column names; invented facilities, no CMS data)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from enrichment_support import make_lead

from connectors.enrichment.waterfall import build_waterfall
from leadflow.canonical import CareSetting, OrgKind, OrgType

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
# a few of the file's columns, in its order, plus ones leadflow ignores
POS_CSV = """\
PRVDR_CTGRY_SBTYP_CD,PRVDR_CTGRY_CD,CHOW_CNT,CITY_NAME,BED_CNT,CRTFD_BED_CNT,FAC_NAME,PGM_TRMNTN_CD,PRVDR_NUM,STATE_CD,ZIP_CD
11,01,00,PRAIRIE CITY,25,25,PRAIRIE CITY COMMUNITY HOSPITAL,00,171301,KS,67001
04,01,00,TOPEKA,120,96,SUNFLOWER BEHAVIORAL HEALTH HOSPITAL,00,174012,KS,66601
06,01,00,WICHITA,260,248,WICHITA CHILDRENS HOSPITAL,00,173300,KS,67201
01,01,00,SALINA,410,398,ST. FRANCIS MEDICAL CENTER,00,170001,KS,67401
12,01,00,GREENLEAF,0,0,GREENLEAF RURAL EMERGENCY HOSPITAL,00,170099,KS,66943
01,01,00,EMPORIA,150,150,EMPORIA GENERAL HOSPITAL,01,170050,KS,66801
01,02,00,SALINA,90,90,SALINA NURSING AND REHAB,00,175111,KS,67401
"""


@pytest.fixture()
def waterfall(tmp_path: Path):
    (tmp_path / "pos.csv").write_text(POS_CSV, encoding="utf-8")
    config = {"providers": [{"name": "cms_pos", "type": "reference_file", "format": "cms_pos", "path": "pos.csv",
                             # the file's data dictionary names the Rural Emergency Hospital subtype; this test's file uses 12
                             "values": {"org_kind": {"12": "rural_emergency"}}}],
              "cache": {"enabled": False}}
    path = tmp_path / "enrichment.yaml"
    path.write_text(yaml.safe_dump(config))
    return build_waterfall(path)


def test_matched_by_ccn_it_gives_certified_beds_kind_and_care_setting(waterfall):
    leads = [make_lead("1", company_name="Prairie City Hosp", ccn="171301"),
             make_lead("2", company_name="Sunflower", ccn="174012"),
             make_lead("3", ccn="73300"),  # read as 073300 (a spreadsheet drops leading zeros): not 173300
             make_lead("4", ccn="170099")]
    outcomes = waterfall.enrich_batch(leads, NOW)
    got = [(o.lead.bed_count, o.lead.org_kind, o.lead.care_setting, o.lead.org_type) for o in outcomes]
    assert got[0] == (25, OrgKind.critical_access, CareSetting.inpatient, OrgType.hospital)
    assert got[1] == (96, OrgKind.psychiatric, CareSetting.inpatient, OrgType.hospital)
    assert got[2] == (None, None, None, None)  # 073300 is not 173300
    assert got[3] == (0, OrgKind.rural_emergency, CareSetting.ambulatory, OrgType.hospital)  # no inpatient beds
    assert outcomes[0].provenance["bed_count"].provider == "cms_pos"
    assert outcomes[0].provenance["bed_count"].source_key.endswith("row:2") and outcomes[0].provenance["org_kind"].confidence == 1.0


def test_matched_by_name_city_and_state_as_typed(waterfall):
    leads = [make_lead("1", company_name="Wichita Children's Hosp", city="Wichita", state="KS"),
             make_lead("2", company_name="St Francis Med Ctr", city="Salina", state="Kansas"),
             make_lead("3", company_name="St. Francis Medical Center", city="Topeka", state="KS")]  # another city
    outcomes = waterfall.enrich_batch(leads, NOW)
    assert [(o.lead.org_kind, o.lead.bed_count) for o in outcomes] == [
        (OrgKind.childrens, 248), (OrgKind.general_acute, 398), (None, None)]


def test_terminated_providers_and_other_categories_are_not_matched(waterfall):
    leads = [make_lead("1", ccn="170050"),  # PGM_TRMNTN_CD 01: no longer active
             make_lead("2", company_name="Salina Nursing and Rehab", city="Salina", state="KS")]  # a nursing facility
    outcomes = waterfall.enrich_batch(leads, NOW)
    assert all(o.lead.bed_count is None and o.lead.org_kind is None for o in outcomes)


def test_an_unknown_format_is_an_error_naming_it(tmp_path):
    (tmp_path / "pos.csv").write_text(POS_CSV, encoding="utf-8")
    path = tmp_path / "enrichment.yaml"
    path.write_text(yaml.safe_dump({"providers": [{"type": "reference_file", "format": "cms_posx", "path": "pos.csv"}]}))
    with pytest.raises(ValueError, match="format 'cms_posx' is not one of"):
        build_waterfall(path)
