"""Who may do what on the bus: roles as NATS users with subject permissions (``roles``), their keys on
disk and how a process finds them (``credentials``), the server's side of it (``server_config``,
``servers``), minting JWTs for operator mode (``jwt``), and keeping secrets out of logs (``redaction``).

Why a package of its own: the permission table is derived from what the other packages do on the bus
(every ``$JS.API`` call, KV key, object store subject and reply inbox), so it sits above the store whose
names it uses and below the processes and the CLI that run under it (``pyproject.toml``, layers).
"""
