"""Credentials on disk: one nkey per role, generated into a private directory, found by every process.

**Why nkeys, not user and password.** An nkey user authenticates by signing the server's nonce with a
seed it never sends: a server config holds only public keys (nothing in ``ops/nats`` or a rendered
config is a secret), a password cannot be read off the wire where there is no TLS, and the same keys
and tooling are what operator mode (JWTs, ``engine/security/jwt.py``) is built on. The seed file is the
only secret; nats-py reads it from the file at each (re)connect, so no secret is ever on a command line
or in an environment variable.

**Layout** (``.dsctl/credentials`` by default: next to ``dsctl up``'s store ``.dsctl/nats``):

    <dir>/                 0700
      admin.nk, engine.nk, fleet.nk, ingest.nk, publisher.nk, auditor.nk   0600, one nkey seed each
      executor-<node>.nk   0600, one per node served by its own executor
      <name>.creds         0600, a user JWT and its seed (operator mode); preferred over <name>.nk
      auth.conf            the server's users and permissions (public keys only; server_config.py)

**Finding them.** ``--credentials DIR``, else ``$DSCTL_CREDENTIALS``, else ``.dsctl/credentials`` (from
the working directory, like the store). Each command asks for the roles that can do its job, in order of
preference (``dsctl get``: admin, then auditor; ``dsctl engine run``: engine; ``--role`` or
``$DSCTL_ROLE`` picks one); credentials given explicitly (``--creds``, ``--nkey``, ``--user``,
``--token`` or their ``NATS_*`` variables) win over any found here. With none found the connection is
made without credentials: a server without authorisation takes it, a secured one refuses it, and the
error then says where dsctl looked.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import msgspec
import structlog

from engine.security.roles import Identity, Role, inbox_prefix
from engine.store.settings import NatsSettings, split_userinfo
from events.errors import InvalidInput, PermanentError

log = structlog.get_logger("dsctl.security")

DEFAULT_DIR = Path(".dsctl") / "credentials"
DIR_ENV = "DSCTL_CREDENTIALS"
ROLE_ENV = "DSCTL_ROLE"
SEED_SUFFIX = ".nk"
CREDS_SUFFIX = ".creds"
#: what ``init`` creates: every role but the per-node executors (``add`` makes those)
BASE_IDENTITIES: tuple[Identity, ...] = tuple(Identity(r) for r in Role if r is not Role.EXECUTOR)


def new_seed() -> bytes:
    """A fresh user nkey seed (``SU...``)."""
    import nkeys  # only where keys are made or read: every CLI command imports this module

    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))


def public_key_of(seed: bytes) -> str:
    import nkeys

    kp = nkeys.from_seed(bytearray(seed))
    try:
        return bytes(kp.public_key).decode()
    finally:
        kp.wipe()


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600 from the first byte: the file is
    created with that mode, never chmod-ed after), replacing it atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its parents) and make it 0700; an existing one is tightened to 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if stat.S_IMODE(path.stat().st_mode) != 0o700:
        path.chmod(0o700)
    return path


class CredentialStore:
    """The credentials directory (module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def __repr__(self) -> str:
        return f"CredentialStore({str(self.dir)!r})"

    def seed_path(self, identity: Identity) -> Path:
        return self.dir / f"{identity.name}{SEED_SUFFIX}"

    def creds_path(self, identity: Identity) -> Path:
        return self.dir / f"{identity.name}{CREDS_SUFFIX}"

    @property
    def auth_conf(self) -> Path:
        return self.dir / "auth.conf"

    def exists(self) -> bool:
        return self.dir.is_dir()

    def ensure(self, identity: Identity) -> Path:
        """The seed file of ``identity``, created if absent (an existing one is kept: the processes
        already running with it keep working)."""
        private_dir(self.dir)
        path = self.seed_path(identity)
        if not path.exists():
            write_private(path, new_seed() + b"\n")
            log.info("credentials.created", identity=identity.name, path=str(path))
        return path

    def init(self, identities: Iterable[Identity] = BASE_IDENTITIES) -> list[Identity]:
        """Every base role's seed (``BASE_IDENTITIES``); returns the identities now present."""
        for identity in identities:
            self.ensure(identity)
        return self.identities()

    def seed(self, identity: Identity) -> bytes:
        path = self.seed_path(identity)
        try:
            return path.read_bytes().strip()
        except FileNotFoundError:
            raise PermanentError(f"no seed for {identity.name} in {self.dir}") from None

    def public_key(self, identity: Identity) -> str:
        return public_key_of(self.seed(identity))

    def identities(self) -> list[Identity]:
        """Every identity with a seed here, in a stable order (base roles first, then executors)."""
        if not self.exists():
            return []
        found: list[Identity] = []
        for path in sorted(self.dir.glob(f"*{SEED_SUFFIX}")):
            try:
                found.append(Identity.parse(path.name[: -len(SEED_SUFFIX)]))
            except ValueError:
                log.warning("credentials.unknown_file", path=str(path))
        order = {r: i for i, r in enumerate(Role)}
        return sorted(found, key=lambda i: (i.role is Role.EXECUTOR, order[i.role], i.node or ""))

    def find(self, identity: Identity) -> Path | None:
        """The file to connect as ``identity`` with: a ``.creds`` (operator mode), else the seed."""
        for path in (self.creds_path(identity), self.seed_path(identity)):
            if path.is_file():
                _warn_if_open(path)
                return path
        return None


def _warn_if_open(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("credentials.readable_by_others", path=str(path), mode=oct(mode), fix=f"chmod 600 {path}")


# --- finding them ------------------------------------------------------------------------------------


def directory(flag: str | None = None, env: Mapping[str, str] | None = None) -> Path:
    """``--credentials``, else ``$DSCTL_CREDENTIALS``, else ``.dsctl/credentials``."""
    env = os.environ if env is None else env
    return Path(flag or env.get(DIR_ENV) or DEFAULT_DIR)


def explicit_auth(settings: NatsSettings) -> bool:
    """Credentials were given by flag, environment or URL: they win over the directory's."""
    in_url = any(split_userinfo(url)[1] for url in settings.servers)
    return bool(settings.user or settings.token or settings.creds or settings.nkey or in_url)


def wanted(choices: Sequence[Identity], role: str | None) -> list[Identity]:
    """The identities to look for: ``role`` alone when given (``--role``/``$DSCTL_ROLE``), else the
    command's own preference."""
    if not role:
        return list(choices)
    try:
        return [Identity.parse(role)]
    except ValueError as err:
        raise InvalidInput(str(err), "--role") from None


def with_credentials(
    settings: NatsSettings, choices: Sequence[Identity], store: CredentialStore
) -> NatsSettings:
    """``settings`` connecting as the first of ``choices`` that has a file in ``store``; unchanged (but
    with a hint for the error message) when credentials were given explicitly or none is found."""
    if explicit_auth(settings):
        return settings
    names = " or ".join(i.name for i in choices) or "(none)"
    for identity in choices:
        path = store.find(identity)
        if path is None:
            continue
        kind = "creds" if path.suffix == CREDS_SUFFIX else "nkey"
        return msgspec.structs.replace(
            settings,
            creds=str(path) if kind == "creds" else None,
            nkey=str(path) if kind == "nkey" else None,
            inbox_prefix=inbox_prefix(identity),
            auth_hint=f"connecting as {identity.name} with {path}",
        )
    hint = (
        f"no credentials for {names} in {store.dir} (dsctl looks in --credentials DIR, $"
        f"{DIR_ENV}, then {DEFAULT_DIR}; `dsctl admin credentials` creates them; --creds/--nkey or "
        "NATS_CREDS/NATS_NKEY name a file)"
    )
    return msgspec.structs.replace(settings, auth_hint=hint)
