"""A local, stateful stand-in for the HubSpot, Salesforce and NPPES APIs over real HTTP.

``from sandbox import start_sandbox`` (in-process, a uvicorn thread) or ``start_sandbox_process``
(``leadflow sandbox serve`` in a child process); both yield a ``SandboxHandle``. See
``sandbox/README.md`` for endpoints, stats names, the fault and rate-limit SPECs and the
Salesforce client recipe.
"""

from sandbox.server import SandboxHandle, build_sandbox, start_sandbox, start_sandbox_process, wait_ready

__all__ = ["SandboxHandle", "build_sandbox", "start_sandbox", "start_sandbox_process", "wait_ready"]
