"""The CRM connectors (HubSpot, Salesforce): reading pages of leads, converting them through
mappings/, planning and writing changes back, upserting tasks, setup and change notifications.
``base`` is the plain-data contract the flows use; ``common`` is what both connectors share."""
