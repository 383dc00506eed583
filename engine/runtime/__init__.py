"""Process plumbing every dsctl process shares: logging, metrics, retry policy, stopping tasks. Knows
nothing of NATS or of DaemonSets."""
