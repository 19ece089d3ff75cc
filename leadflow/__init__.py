"""leadflow: healthcare lead qualification for Salesforce and HubSpot, orchestrated by Prefect."""

__version__ = "0.1.0"
