"""Operator mode: NATS's decentralised JWT authentication, minted here, with one scoped signing key per
role whose permissions are a template.

Why: with config-file users every node's executor is an entry in ``auth.conf``, so a fleet of 10,000 nodes
is a 10,000-entry file that every server must reload for each new node. In operator mode the servers
trust an operator key; the account (``DSCTL``) lists a *scoped signing key* per role, and the key's
template is the role's permissions. A user JWT signed with a role's key gets that role's permissions,
with ``{{name()}}`` and ``{{tag(node)}}`` filled in from the user's own JWT: one template serves every
node, a new executor needs only its ``.creds`` file (minted offline, no server touched), and the servers'
configuration never grows. The user JWT itself carries no permissions: the server takes the template's
(a user signed by a scoped key cannot widen them).

The executor template (``roles.executor_permissions``) uses the user's name for subject tokens
(``dse.cmd.{{name()}}``: the node's name with ``.`` written ``_``, as subjects do) and a ``node`` tag for
the KV keys (``$KV.dse_node_leases.{{tag(node)}}``: the node's name as it is). nats-server fills templates
only as whole subject tokens, which these are.

Files (beside the config-mode files, ``<credentials>/operator/``; seeds 0600):

    operator.nk, account.nk, system.nk, signing-<role>.nk    seeds (operator, accounts, signing keys)
    operator.jwt, account.jwt, system.jwt                     the signed claims
    server.conf        operator, system account, MEMORY resolver preloaded with both accounts: what
                       a server includes instead of ``auth.conf`` (public JWTs only, no secret)

and ``<credentials>/<identity>.creds`` (a user JWT and its seed) per identity, which every dsctl process
prefers over the ``.nk`` of the same identity. The JWT format is nats-io/jwt v2: a ``ed25519-nkey``
signature over ``base64url(header).base64url(claims)``, ``jti`` the base32 SHA-256 of the claims.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from engine.security.credentials import CredentialStore, private_dir, write_private
from engine.security.roles import (
    Identity,
    Permissions,
    Role,
    executor_permissions,
    permissions,
)
from events.errors import InvalidInput

ACCOUNT_NAME = "DSCTL"
SYSTEM_NAME = "SYS"
NODE_TAG = "node"
#: what each role's signing key fills in for an executor: the token and the key of the user's node
NAME_TEMPLATE = "{{name()}}"
NODE_TEMPLATE = f"{{{{tag({NODE_TAG})}}}}"
#: how long the query service's answer parts may keep coming (nanoseconds, as the JWT counts)
RESPONSE_WINDOW_NS = 5 * 60 * 1_000_000_000


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _keypair(seed: bytes) -> Any:
    import nkeys

    return nkeys.from_seed(bytearray(seed))


def _new_seed(prefix: int) -> bytes:
    import nkeys

    return bytes(nkeys.encode_seed(os.urandom(32), prefix))


def public_key(seed: bytes) -> str:
    kp = _keypair(seed)
    try:
        return bytes(kp.public_key).decode()
    finally:
        kp.wipe()


def encode(claims: dict[str, Any], signer_seed: bytes) -> str:
    """A signed JWT of ``claims`` (``iss`` is set to the signer's public key, ``iat`` and ``jti`` here)."""
    body = dict(claims)
    body["iss"] = public_key(signer_seed)
    body.setdefault("iat", int(time.time()))
    body["jti"] = ""
    digest = hashlib.sha256(json.dumps(body, separators=(",", ":"), sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    kp = _keypair(signer_seed)
    try:
        signature = bytes(kp.sign(f"{header}.{payload}".encode()))
    finally:
        kp.wipe()
    return f"{header}.{payload}.{_b64(signature)}"


def decode(token: str) -> dict[str, Any]:
    """The claims of a JWT (not verified: for tests and ``show``)."""
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def creds_file(user_jwt: str, seed: bytes) -> bytes:
    """The ``.creds`` layout nats-py (and every NATS client) reads: the JWT, then the seed."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed.decode()}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    ).encode()


UNLIMITED = {"subs": -1, "data": -1, "payload": -1}


def _limits(perms: Permissions) -> dict[str, Any]:
    """A role's permissions as a JWT permission template."""
    out: dict[str, Any] = {
        "pub": {"allow": list(perms.publish)},
        "sub": {"allow": list(perms.subscribe)},
        **UNLIMITED,
    }
    if perms.responses:
        out["resp"] = {"max": perms.responses, "ttl": RESPONSE_WINDOW_NS if perms.responses > 1 else 0}
    return out


def role_template(role: Role) -> Permissions:
    """The permissions a role's signing key grants: concrete for every role but the executor, whose
    node comes from the user's JWT (module docstring)."""
    if role is Role.EXECUTOR:
        return executor_permissions(NODE_TEMPLATE, NAME_TEMPLATE, f"_INBOX_executor.{NAME_TEMPLATE}")
    return permissions(Identity(role))


class OperatorMode:
    """The operator, the accounts and the role signing keys of one credentials directory."""

    def __init__(self, store: CredentialStore) -> None:
        self.store = store
        self.root = store.dir / "operator"

    @property
    def server_conf(self) -> Path:
        return self.root / "server.conf"

    def exists(self) -> bool:
        return (self.root / "account.nk").is_file()

    def _seed(self, name: str, prefix: int) -> bytes:
        path = self.root / f"{name}.nk"
        if not path.exists():
            private_dir(self.root)
            write_private(path, _new_seed(prefix) + b"\n")
        return path.read_bytes().strip()

    def _signing(self, role: Role) -> bytes:
        import nkeys

        return self._seed(f"signing-{role.value}", nkeys.PREFIX_BYTE_ACCOUNT)

    def init(self) -> list[Identity]:
        """Keys made if missing (kept if present), the JWTs and ``server.conf`` written again (a new
        version's templates reach the servers at their next start), and a ``.creds`` for every identity
        of the directory (config-mode seeds are reused: the same identity, now with a JWT)."""
        import nkeys

        operator = self._seed("operator", nkeys.PREFIX_BYTE_OPERATOR)
        account = self._seed("account", nkeys.PREFIX_BYTE_ACCOUNT)
        system = self._seed("system", nkeys.PREFIX_BYTE_ACCOUNT)
        signing_keys = [
            {
                "kind": "user_scope",
                "key": public_key(self._signing(role)),
                "role": role.value,
                "template": _limits(role_template(role)),
                "description": f"dsctl {role.value}",
            }
            for role in Role
        ]
        account_jwt = encode(
            {
                "sub": public_key(account),
                "name": ACCOUNT_NAME,
                "nats": {
                    "limits": {
                        **UNLIMITED,
                        "imports": -1,
                        "exports": -1,
                        "wildcards": True,
                        "conn": -1,
                        "leaf": -1,
                        "mem_storage": -1,
                        "disk_storage": -1,
                        "streams": -1,
                        "consumer": -1,
                        "max_ack_pending": -1,
                    },
                    "signing_keys": signing_keys,
                    "default_permissions": {"pub": {}, "sub": {}},
                    "type": "account",
                    "version": 2,
                },
            },
            operator,
        )
        system_jwt = encode(
            {
                "sub": public_key(system),
                "name": SYSTEM_NAME,
                "nats": {"limits": {**UNLIMITED, "conn": -1}, "type": "account", "version": 2},
            },
            operator,
        )
        operator_jwt = encode(
            {
                "sub": public_key(operator),
                "name": "dsctl",
                "nats": {"system_account": public_key(system), "type": "operator", "version": 2},
            },
            operator,
        )
        for name, token in (("operator", operator_jwt), ("account", account_jwt), ("system", system_jwt)):
            write_private(self.root / f"{name}.jwt", (token + "\n").encode())
        write_private(
            self.server_conf,
            (
                "# Generated by dsctl (engine/security/jwt.py): operator mode. Public JWTs only, no secret.\n"
                f"operator: {json.dumps(operator_jwt)}\n"
                f"system_account: {json.dumps(public_key(system))}\n"
                "resolver: MEMORY\n"
                "resolver_preload: {\n"
                f"  {json.dumps(public_key(account))}: {json.dumps(account_jwt)}\n"
                f"  {json.dumps(public_key(system))}: {json.dumps(system_jwt)}\n"
                "}\n"
            ).encode(),
        )
        identities = self.store.identities()
        for identity in identities:
            self.mint(identity)
        return identities

    def mint(self, identity: Identity) -> Path:
        """``<identity>.creds``: a user JWT for the identity's key, signed with its role's scoped key
        (no server is touched: the servers already trust the key)."""
        if not self.exists():
            raise InvalidInput(
                f"{self.store.dir} is not in operator mode: `dsctl admin credentials --operator` sets it up"
            )
        import nkeys

        seed = self.store.seed(identity) if self.store.seed_path(identity).exists() else None
        if seed is None:
            seed = bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
            write_private(self.store.seed_path(identity), seed + b"\n")
        account = public_key(self._seed("account", nkeys.PREFIX_BYTE_ACCOUNT))
        nats: dict[str, Any] = {"issuer_account": account, "type": "user", "version": 2}
        name = identity.name
        if identity.node is not None:
            # the template's {{name()}} is the node as a subject token, {{tag(node)}} the node itself
            name = identity.node.replace(".", "_")
            nats["tags"] = [f"{NODE_TAG}:{identity.node}"]
        token = encode({"sub": public_key(seed), "name": name, "nats": nats}, self._signing(identity.role))
        path = self.store.creds_path(identity)
        write_private(path, creds_file(token, seed))
        return path
