"""The state store: every table leadflow keeps, and every query on them, in one package
(SQLAlchemy; an SQLite file by default, PostgreSQL in production).

- ``schema``: the tables, the engine, bulk inserts, the upgrade of an older store, the audit hash;
- ``leads``: watermarks, written values and read marks, pending leads, task keys;
- ``audit``: the append-only, hash-chained audit log and its verification;
- ``locks``: the per-CRM run lock (a lease renewed by a heartbeat);
- ``claims``: per-lead claims (a by-id run and a window run never write one lead at once) and the
  notification ids the webhook receiver accepted (replay protection);
- ``orgs``: organization members (buying groups);
- ``runs``: run history and the rejected rows;
- ``cache``: the enrichment cache;
- ``copy`` / ``cli``: moving a whole store to another database (``leadflow state copy``).

It imports nothing of ``flows/``; the connectors and flows call it.
"""
