"""One module per outside system (HubSpot, Salesforce, NPPES, reference files); each turns raw
records into canonical leads and back through mappings/."""
