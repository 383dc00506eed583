"""The pure DaemonSet core: given the read model and ``now``, decide what must happen, and say why.

No I/O, no clock, no randomness. Start at ``reconcile`` (one DaemonSet, one decision); it builds on
``eligibility`` (which nodes), ``manage`` (per node), ``rolling`` (updates), ``status``, ``ownership``
and ``expectations`` (commands in flight). ``manifests`` turns Kubernetes YAML/JSON into events;
``explain`` answers "why (not) on this node". Deliberate departures from upstream are stated in each
module's docstring.
"""
