from pathlib import Path

import pytest
import yaml

from mappings import MAPPINGS_DIR, REQUIRED_OUTPUTS, MappingError, load_mapping, parse_mapping


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_shipped_mappings_load(crm):
    mapping = load_mapping(crm)
    assert mapping.crm == crm
    assert REQUIRED_OUTPUTS <= set(mapping.writable())
    assert mapping.fields["stage"].policy == "never_over_manual"
    assert mapping.modified_field in mapping.crm_fields("lead")


def raw(crm="hubspot"):
    return yaml.safe_load((MAPPINGS_DIR / f"{crm}.yaml").read_text())


def error_for(data) -> MappingError:
    with pytest.raises(MappingError) as info:
        parse_mapping(data, "mappings/test.yaml")
    return info.value


def test_unknown_canonical_field_names_file_and_key():
    data = raw()
    data["fields"]["org_typ"] = {"field": "x"}
    err = error_for(data)
    assert err.path == "mappings/test.yaml" and err.key == "fields.org_typ"
    assert "unknown canonical field 'org_typ'" in str(err)


def test_duplicate_target_is_an_error():
    data = raw()
    data["fields"]["last_name"] = {"field": "FirstName".lower()}
    err = error_for(data)
    assert err.key in ("fields.last_name.field", "fields.first_name.field")
    assert "already the target" in str(err)


def test_missing_required_output_is_an_error():
    data = raw("salesforce")
    del data["fields"]["lead_score"]
    err = error_for(data)
    assert err.key == "fields.lead_score"
    assert "required output" in str(err)


def test_read_only_output_counts_as_missing():
    data = raw()
    data["fields"]["stage"]["direction"] = "read"
    assert error_for(data).key == "fields.stage"


def test_value_map_with_a_value_the_field_lacks():
    data = raw()
    data["fields"]["org_type"]["values"]["veterinary"] = "Vet"
    err = error_for(data)
    assert err.key == "fields.org_type.values"
    assert "'veterinary' is not a value of org_type" in str(err)


def test_value_map_with_two_values_on_one_crm_value():
    data = raw("salesforce")
    data["fields"]["timeline"]["values"]["later"] = "Now"
    err = error_for(data)
    assert err.key == "fields.timeline.values" and "'Now'" in str(err)


def test_value_map_on_a_free_text_field():
    data = raw()
    data["fields"]["specialty"]["values"] = {"a": "b"}
    assert error_for(data).key == "fields.specialty.values"


def test_bad_policy_and_unknown_keys_name_their_location():
    data = raw()
    data["fields"]["stage"]["policy"] = "sometimes"
    assert error_for(data).key == "fields.stage.policy"
    data = raw()
    data["fields"]["email"]["colour"] = "red"
    assert error_for(data).key == "fields.email.colour"


def test_unknown_event_type():
    data = raw()
    data["events"]["tweet"] = {"field": "x"}
    assert error_for(data).key == "events.tweet"


def test_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(MappingError, match="no such mapping file"):
        load_mapping(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("crm: [unclosed\n")
    with pytest.raises(MappingError, match="not valid YAML"):
        load_mapping(bad)


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_native_stages_ship_off_and_switch_on_as_one_written_field(crm):
    off = load_mapping(crm)
    assert not off.native_stages.enabled and "native_stage" not in off.writable()
    data = raw(crm)
    data["native_stages"]["enabled"] = True
    on = parse_mapping(data, f"mappings/{crm}.yaml")
    native = on.writable()["native_stage"]
    assert native.policy == "native_stage" and native.field in ("lifecyclestage", "Status")
    assert {on.native_stages.write.field, on.native_stages.read.field} <= set(on.crm_fields("lead"))


@pytest.mark.parametrize("change, key, words", [
    (lambda n: n["write"]["values"].update(qualified="salesqualifiedlead"), "native_stages.write.values",
     "'qualified' is not a stage"),
    (lambda n: n["write"]["values"].update(sql="opportunity"), "native_stages.write.values", "sales-owned"),
    (lambda n: n["write"]["order"].remove("marketingqualifiedlead"), "native_stages.write.order",
     "'marketingqualifiedlead' (a value leadflow writes) is not in the order"),
    (lambda n: n["read"]["manual"].update(UNQUALIFIED="closed"), "native_stages.read.manual.UNQUALIFIED",
     "'closed' is not a stage"),
    (lambda n: n["read"]["manual"].update(OPEN="nurture"), "native_stages.read", "both accepted and manual"),
    (lambda n: n.update(write=None, read=None), "native_stages", "neither write nor read"),
])
def test_a_wrong_native_stage_mapping_names_file_and_key(change, key, words):
    data = raw("hubspot")
    data["native_stages"]["enabled"] = True
    change(data["native_stages"])
    err = error_for(data)
    assert err.path == "mappings/test.yaml" and err.key == key and words in err.problem


def test_salesforce_native_stages_never_write_a_status_they_read_as_a_reps():
    data = raw("salesforce")
    data["native_stages"]["write"]["values"]["sal"] = "Working - Contacted"
    err = error_for(data)
    assert err.key == "native_stages.write.values" and "leadflow would read its own write as a rep's" in err.problem
    data = raw("salesforce")
    data["native_stages"]["write"]["forward_only"] = True
    data["native_stages"]["write"]["order"] = ["Open - Not Contacted", "Nurturing", "Marketing Qualified",
                                             "Closed - Converted"]
    assert error_for(data).key == "native_stages.write.forward_only"
