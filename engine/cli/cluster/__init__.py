"""``ops/cluster up|down|status``: a 3-node JetStream cluster and the dsctl processes around it, on
loopback, as background processes that outlive the command that started them.

Why not ``EmbeddedCluster``: it owns its servers as child processes (a pipe on stderr, a kill when the
object is collected), which is right for a test and wrong for a development cluster that must keep
running after ``up`` returns and be found again by ``status`` and ``down`` from another shell. So this
module keeps what it started in files under the cluster directory (``.dsctl/cluster`` by default,
``--dir`` or ``$DSCTL_CLUSTER_DIR``):

- ``cluster.json``: the ports and names chosen at the first ``up`` (a later ``up`` reuses them, so a
  restarted server comes back as the same Raft peer on the same routes);
- ``n1.conf``..``n3.conf``: each server's configuration, rendered by ``server_config`` (the committed
  ``ops/nats/cluster-n*.conf`` are its output for the default ports, a test keeps them equal);
- ``n1/``..``n3/``: the JetStream stores; ``logs/<name>.log``; ``run/<name>.pid``. A server's
  ``log_file`` and its stdout/stderr are the same file (both append), so a panic lands beside its log.

A pid file holds the pid *and* the process start time (``/proc/<pid>/stat`` field 22): a pid the
kernel has recycled for another program is never taken for ours, never signalled, and its stale file is
replaced. A zombie counts as gone (nothing may reap a re-parented child in a container).

The streams are created at three replicas by ``up`` itself (``engine.store.setup.ensure``, what the
engine runs), before any dsctl process starts: executors and the ingest service only check that the
store is there. The engines get ``--replicas 3`` (replicas are a floor an engine never lowers), and
every process ``DSCTL_REPLICAS=3`` in its environment.

``status`` also works against servers this module did not start (real machines, ``docs/deploy.md``):
``--nats`` and ``--monitor`` name them, and it reports what the servers and the KV buckets say.
"""
