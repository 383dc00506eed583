"""The validating ingest service other services publish through, its typed client, and the published
contract (JSON Schema, AsyncAPI)."""
