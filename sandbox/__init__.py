"""A local, stateful stand-in for the HubSpot, Salesforce and NPPES APIs over real HTTP."""
