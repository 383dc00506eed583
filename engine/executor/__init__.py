"""The kubelet's role: executors that carry out commands on their nodes, the drivers that run pods, and
the appender that brings pod reports to the log."""
