"""The outside systems. ``crm/``: the HubSpot and Salesforce connectors, which turn CRM records into
canonical leads and back through mappings/. ``enrichment/``: the waterfall and its providers (NPPES,
reference files, CRM industry). ``retry`` and ``ratelimit``: the one retry policy and the rate limits
every outside call goes through."""
