"""The qualification domain: pure functions over canonical leads, configured by a YAML model."""
