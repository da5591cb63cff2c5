"""One release at a time per registered model: `release_lock(name)`.

promote reads the Production version, checks that it is the one the candidate was evaluated
against, registers the candidate and releases it. Two promotes running that sequence at once can
both pass the check and both release, so the sequence runs under a registry-wide lock. Which lock
depends on where the registry lives (`mlflow.get_registry_uri()`):

- SQLite or a file store: an OS file lock (`fcntl.flock`) on a file next to the database (for a
  file store: under `.pdmflow/locks/` beside the store's directory). The kernel drops it when
  the holder dies; the file itself stays (deleting it would let a waiter lock a stale inode).
  Not for network file systems, where flock is not reliable.
- PostgreSQL used directly: a session advisory lock, `pg_try_advisory_lock(hashtext(key))` on a
  connection kept open for the release. The server drops it when the connection goes.
- An MLflow tracking server (http/https) and every other store: clients have no database
  credentials, and the REST API has no compare-and-set (a tag write always wins). The one atomic
  operation it offers is creating an entity whose name is unique: creating the registered model
  `<name>.release-lock` fails with RESOURCE_ALREADY_EXISTS while another holder has it, enforced
  by the database's primary key on the name. Its tags name the holder (user, host, pid), a random
  token and an expiry; a thread of the holder pushes the expiry on every HEARTBEAT_SECONDS, and
  the release deletes it. A lock past its expiry (the holder died) is broken, with a log line.
  Two waiters breaking the same dead lock are serialised by another unique name
  (`<lock>.break-<token>`), so a lock taken in between is never deleted by the slower one.
  Clocks of promote hosts are assumed in sync to well within LEASE_SECONDS (NTP).
  The lock shows up in the registry UI for the seconds a release takes. On a server with
  authentication, breaking another account's dead lock needs MANAGE on it (or an admin).
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

from pdmflow.errors import StepInputError

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".release-lock"
# The entity lock: expiry pushed forward every HEARTBEAT_SECONDS by a live holder.
LEASE_SECONDS = 60.0
HEARTBEAT_SECONDS = 10.0
POLL_SECONDS = 0.5
HOLDER_TAG = "pdmflow.lock.holder"
TOKEN_TAG = "pdmflow.lock.token"
EXPIRES_TAG = "pdmflow.lock.expires_at"
# Raised by a create that lost the race; DOES_NOT_EXIST when the winner let go in between
# (MLflow's SQL store reads the existing model back to word its error).
_CONTENDED = ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST")


def holder_description() -> str:
    """Who is asking: user@host pid N."""
    try:
        user = os.environ.get("PDMFLOW_USER") or getpass.getuser()
    except OSError:  # no login name in some containers
        user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def _timed_out(name: str, holder: str, wait_seconds: float) -> StepInputError:
    return StepInputError(
        f"model {name}: another release holds the release lock ({holder}); "
        f"gave up after {wait_seconds:g} s: try again when it has finished"
    )


def _waiting(name: str, holder: str, wait_seconds: float) -> None:
    log.warning(
        "release lock of model %s is held by %s: waiting up to %g s", name, holder, wait_seconds
    )


def _scheme(uri: str) -> str:
    return uri.split(":", 1)[0].lower() if ":" in uri else ""


def lock_file_path(uri: str, name: str) -> Path | None:
    """The file locked for model `name` on a SQLite or file store at `uri`; None for others."""
    scheme = _scheme(uri)
    if scheme == "sqlite":
        database = make_url(uri).database
        if not database or database == ":memory:":
            return None
        database_path = Path(database).resolve()
        return _lock_file(database_path.parent, f"{database_path.name}.", name)
    if scheme in ("", "file"):
        store = Path(urlparse(uri).path if scheme == "file" else uri).resolve()
        return _lock_file(store.parent / ".pdmflow" / "locks", f"{store.name}.", name)
    return None


@contextmanager
def release_lock(name: str, wait_seconds: float = 120) -> Iterator[None]:
    """Hold the registry-wide release lock of model `name` for the `with` block.

    Waits up to `wait_seconds` for another holder (saying so once, as a log warning); then
    raises StepInputError naming the model and the holder.
    """
    uri = mlflow.get_registry_uri()
    if (path := lock_file_path(uri, name)) is not None:
        lock = file_lock(path, name, wait_seconds)
    elif _scheme(uri).startswith("postgresql"):
        lock = postgres_lock(uri, name, wait_seconds)
    else:  # a tracking server, an in-memory SQLite, MySQL, ...: the registry itself
        lock = registry_entity_lock(name, wait_seconds)
    with lock:
        yield


def _lock_file(directory: Path, prefix: str, name: str) -> Path:
    # Model names may hold any character but / and :; the digest keeps similar names apart.
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return directory / f"{prefix}{safe}-{digest}{LOCK_SUFFIX}"


@contextmanager
def file_lock(path: Path, name: str, wait_seconds: float) -> Iterator[None]:
    """An exclusive flock on `path`; the file holds the holder's description while held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + wait_seconds
        said = False
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = path.read_text().strip() or "unknown holder"
                if time.monotonic() >= deadline:
                    raise _timed_out(name, holder, wait_seconds) from None
                if not said:
                    _waiting(name, holder, wait_seconds)
                    said = True
                time.sleep(POLL_SECONDS)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{holder_description()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(descriptor, 0)
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


@contextmanager
def postgres_lock(url: str, name: str, wait_seconds: float) -> Iterator[None]:
    """A PostgreSQL session advisory lock on hashtext('pdmflow.release:<name>')."""
    key = f"pdmflow.release:{name}"
    holder = holder_description()
    # The holder's description travels as the connection's application_name (63 bytes max),
    # so a waiter can name it from pg_stat_activity.
    engine = sa.create_engine(
        url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"application_name": f"pdmflow {holder}"[:63]},
    )
    try:
        with engine.connect() as connection:
            deadline = time.monotonic() + wait_seconds
            take = sa.text("SELECT pg_try_advisory_lock(hashtext(:key))")
            said = False
            while not connection.execute(take, {"key": key}).scalar():
                if time.monotonic() >= deadline:
                    raise _timed_out(name, _postgres_holder(connection, key), wait_seconds)
                if not said:
                    _waiting(name, _postgres_holder(connection, key), wait_seconds)
                    said = True
                time.sleep(POLL_SECONDS)
            try:
                yield
            finally:
                connection.execute(
                    sa.text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": key}
                )
    finally:
        engine.dispose()


def _postgres_holder(connection: Connection, key: str) -> str:
    # pg_advisory_lock(bigint) keeps the key's high half in classid and the low half in objid.
    row = connection.execute(
        sa.text(
            "SELECT a.application_name, a.client_addr, a.pid FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            "AND l.objid::bigint = (hashtext(:key)::bigint & 4294967295) "
            "AND l.classid::bigint = ((hashtext(:key)::bigint >> 32) & 4294967295)"
        ),
        {"key": key},
    ).first()
    if row is None:
        return "unknown holder"
    return f"{row.application_name or 'a session'} (database backend pid {row.pid})"


@dataclass(frozen=True)
class _Held:
    holder: str
    token: str
    expires_at: datetime | None

    def expired(self) -> bool:
        return self.expires_at is not None and datetime.now(UTC) > self.expires_at


def _read_entity(client: MlflowClient, lock_name: str) -> _Held | None:
    """The lock's holder, or None when nobody holds it."""
    try:
        model = client.get_registered_model(lock_name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    tags = model.tags
    try:
        expires_at: datetime | None = datetime.fromisoformat(tags[EXPIRES_TAG])
    except (KeyError, ValueError):
        expires_at = None  # not written by pdmflow: never broken automatically
    holder = tags.get(HOLDER_TAG, "unknown holder")
    if expires_at is not None:
        holder += f", expires {expires_at.isoformat(timespec='seconds')}"
    return _Held(holder, tags.get(TOKEN_TAG, ""), expires_at)


def _created(client: MlflowClient, entity: str, tags: dict[str, str], description: str) -> bool:
    """Create the registered model `entity`; False when the name is taken."""
    try:
        client.create_registered_model(entity, tags=tags, description=description)
    except MlflowException as error:
        if error.error_code in _CONTENDED:
            return False
        raise
    return True


def _expiry() -> str:
    return (datetime.now(UTC) + timedelta(seconds=LEASE_SECONDS)).isoformat()


def _break(client: MlflowClient, name: str, lock_name: str, dead: _Held) -> bool:
    """Delete the lock of a holder past its expiry, unless another waiter is doing so.

    True when the lock is gone (deleted here or meanwhile).
    """
    breaker = f"{lock_name}.break-{dead.token}"
    if not _created(client, breaker, {HOLDER_TAG: holder_description()}, "breaking " + lock_name):
        # A breaker that died between its two calls would block every waiter: drop it late.
        try:
            stale = client.get_registered_model(breaker)
        except MlflowException:
            return False
        if time.time() - stale.creation_timestamp / 1000 > LEASE_SECONDS:
            client.delete_registered_model(breaker)
        return False
    try:
        current = _read_entity(client, lock_name)
        if current is not None and current.token == dead.token:
            log.warning(
                "release lock of model %s: breaking the expired lock of %s (holder gone)",
                name,
                dead.holder,
            )
            client.delete_registered_model(lock_name)
    finally:
        client.delete_registered_model(breaker)
    return True


def _acquire(
    client: MlflowClient, name: str, tags: dict[str, str], description: str, wait_seconds: float
) -> None:
    lock_name = f"{name}{LOCK_SUFFIX}"
    deadline = time.monotonic() + wait_seconds
    said = False
    while True:
        if _created(client, lock_name, {**tags, EXPIRES_TAG: _expiry()}, description):
            return
        held = _read_entity(client, lock_name)
        if held is None:
            continue  # let go between our create and our read: try again at once
        if held.token == tags[TOKEN_TAG]:
            return  # our create went through but its answer was lost (a retried request)
        if held.expired() and _break(client, name, lock_name, held):
            continue
        if time.monotonic() >= deadline:
            raise _timed_out(name, held.holder, wait_seconds)
        if not said:
            _waiting(name, held.holder, wait_seconds)
            said = True
        time.sleep(POLL_SECONDS)


@contextmanager
def registry_entity_lock(name: str, wait_seconds: float) -> Iterator[None]:
    """The lock as the registered model `<name>.release-lock` (see the module docstring)."""
    client = MlflowClient()
    lock_name = f"{name}{LOCK_SUFFIX}"
    token = uuid.uuid4().hex
    holder = holder_description()
    description = (
        f"Release lock of model {name}, held by {holder} while it releases. Deleted when the "
        f"release ends; broken by the next release once {EXPIRES_TAG} has passed."
    )
    try:
        _acquire(client, name, {HOLDER_TAG: holder, TOKEN_TAG: token}, description, wait_seconds)
    except MlflowException as error:
        # E.g. an account that may not create registered models, or not delete another's lock.
        raise StepInputError(
            f"model {name}: cannot take the release lock (registered model {lock_name}): "
            f"{error.error_code}: {error.message.splitlines()[0] if error.message else ''}"
        ) from None

    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                client.set_registered_model_tag(lock_name, EXPIRES_TAG, _expiry())
            except MlflowException as error:
                log.warning("release lock of model %s: cannot renew (%s)", name, error.message)

    heartbeat = threading.Thread(target=renew, name=f"release-lock {name}", daemon=True)
    heartbeat.start()
    try:
        yield
    finally:
        stop.set()
        heartbeat.join()
        current = _read_entity(client, lock_name)
        # Only our own lock: one broken while we stalled now belongs to someone else.
        if current is not None and current.token == token:
            client.delete_registered_model(lock_name)
