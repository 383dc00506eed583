"""The query service: reads answered from an engine's live projection over NATS request/reply
(docs/console.md, "The query service")."""
