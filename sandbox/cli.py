"""``leadflow sandbox ...`` commands."""

from __future__ import annotations

from typing import Optional

import typer

sandbox_app = typer.Typer(no_args_is_help=True)


@sandbox_app.command("serve")
def serve(
    port: int = typer.Option(8765, help="TCP port on 127.0.0.1 (0: any free port; the URL is printed)."),
    seed: Optional[str] = typer.Option(None, help="N (generate N leads per CRM) or a JSON seed FILE."),
    random_seed: int = typer.Option(42, help="Seed of the generator and of fraction-based faults."),
    faults: Optional[str] = typer.Option(None, help="Fault SPEC, e.g. 'hubspot.contacts.batch_update:status=500,rate=0.2'."),
    rate_limit: Optional[str] = typer.Option(None, help="Rate-limit SPEC, e.g. 'hubspot=190/10s,salesforce_daily=15000'."),
    hubspot_token: str = typer.Option("sandbox-token", help="HubSpot bearer token the sandbox accepts."),
    sf_username: str = typer.Option("sandbox@leadflow.test", help="Salesforce username."),
    sf_password: str = typer.Option("sandbox", help="Salesforce password."),
    sf_security_token: str = typer.Option("", help="Salesforce security token."),
    sf_client_id: str = typer.Option("sandbox", help="Salesforce connected-app consumer key."),
    sf_client_secret: str = typer.Option("sandbox", help="Salesforce connected-app consumer secret."),
    sf_session_id: str = typer.Option("sandbox-session", help="A Salesforce session id accepted as a bearer token."),
    notify_url: Optional[str] = typer.Option(None, help="Send change notifications to URL/webhooks/{hubspot,salesforce} (loopback)."),
    hubspot_app_secret: str = typer.Option("sandbox-app-secret", help="The app secret HubSpot webhooks are signed with."),
) -> None:
    """Serve the HubSpot, Salesforce and NPPES stand-ins on one port until interrupted."""
    import time

    import uvicorn

    from sandbox.app import Credentials
    from sandbox.faults import SpecError
    from sandbox.server import _bind, build_sandbox

    credentials = Credentials(hubspot_token, sf_username, sf_password, sf_security_token, sf_client_id,
                              sf_client_secret, sf_session_id)
    started = time.perf_counter()
    try:
        sandbox = build_sandbox(seed, random_seed, faults, rate_limit, credentials)
    except SpecError as exc:
        raise typer.BadParameter(str(exc)) from None
    seconds = time.perf_counter() - started
    if notify_url:
        try:
            sandbox.notifier.configure(notify_url, hubspot_app_secret)
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from None
    sock = _bind(port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    hs, sf = sandbox.hubspot.tables, sandbox.salesforce.tables
    typer.echo(f"seeded in {seconds:.1f}s: HubSpot {len(hs['contacts'])} contacts, {len(hs['companies'])} companies, "
               f"{len(hs['tasks'])} tasks; Salesforce {len(sf['Lead'])} leads, {len(sf['Task'])} tasks; "
               f"NPPES {len(sandbox.nppes_records)} organizations")
    typer.echo(f"HubSpot:    host={url}  token={credentials.hubspot_token}")
    typer.echo(f"Salesforce: instance_url={url}  username={credentials.username}  password={credentials.password}  "
               f"security_token={credentials.security_token!r}  client_id={credentials.client_id}  "
               f"client_secret={credentials.client_secret}  session_id={credentials.session_id}")
    typer.echo(f"NPPES:      {url}/api/?version=2.1")
    typer.echo(f"Admin:      {url}/_sandbox/stats  (faults, state, requests)")
    typer.echo(f"leadflow sandbox listening on {url}", )
    config = uvicorn.Config(sandbox.app(), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=1, timeout_keep_alive=30)
    uvicorn.Server(config).run(sockets=[sock])


@sandbox_app.command("seed")
def seed_file(
    leads: int = typer.Argument(..., help="Leads per CRM."),
    out: str = typer.Option(..., help="Where to write the JSON seed FILE."),
    random_seed: int = typer.Option(42, help="Generator seed."),
) -> None:
    """Write generated seed data as a JSON FILE (the ``--seed FILE`` format) to inspect or edit."""
    import json
    from pathlib import Path

    from sandbox.seed import generate

    data = generate(leads, random_seed)
    Path(out).write_text(json.dumps({"hubspot": data.hubspot, "salesforce": data.salesforce, "nppes": data.nppes}))
    typer.echo(f"wrote {out}")
