"""The log and everything that talks to NATS about it: connection and settings, the JetStream API, stream
definitions, the event store (its port, the JetStream implementation, its in-memory twin and the helpers
that ride out an unavailable store), the ordered consumer, the projector that folds the log, leases, and
an embedded server or cluster for development and tests."""
