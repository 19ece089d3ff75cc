"""Prefect flows and tasks that compose connectors/ and scoring/ (no domain logic here)."""
