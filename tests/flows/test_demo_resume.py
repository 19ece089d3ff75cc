"""A resumed demo portal keeps the properties ``crm setup`` created: the second setup creates nothing."""

from __future__ import annotations

import json


def test_a_resumed_demo_portal_needs_no_setup(tmp_path):
    from connectors.crm.factory import connector_for_sandbox
    from connectors.crm.setup import hubspot_setup
    from flows.demo import restore_schema, snapshot
    from state.schema import make_engine
    from sandbox import start_sandbox

    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    saved = tmp_path / "sandbox.json"
    with start_sandbox(20) as handle:
        first = hubspot_setup(connector_for_sandbox(handle, "hubspot", engine))
        saved.write_text(json.dumps(snapshot(handle)))
    assert first.created and first.summary().startswith(f"{len(first.created)} created, ")
    with start_sandbox(str(saved)) as handle:
        restore_schema(handle, json.loads(saved.read_text())["hubspot_schema"])
        again = hubspot_setup(connector_for_sandbox(handle, "hubspot", engine))
    assert again.created == []
    assert again.summary() == f"nothing to create: all {len(first.created) + len(first.existing)} already exist"
