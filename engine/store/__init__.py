"""The log and everything that talks to NATS about it: connection and settings, the JetStream API, stream
definitions, the event store (and its in-memory twin), the projector that folds it, leases, and an
embedded server or cluster for development and tests."""
