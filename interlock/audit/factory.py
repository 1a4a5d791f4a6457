"""Building the audit log a configuration describes (used by `up` and the CLI)."""

from __future__ import annotations

from pathlib import Path

from interlock.audit.checkpoint import CheckpointError, NoteSigner, Signer, load_or_create_key
from interlock.audit.cosignature import WitnessKey
from interlock.audit.log import AuditLog
from interlock.audit.store import AuditStore
from interlock.audit.witnessing import Witness, Witnesses
from interlock.config import Config
from interlock.errors import ConfigError


def signer_for(config: Config) -> NoteSigner:
    """OpenBao transit when `audit.transit` is set (its public key read now), else the
    local key file, created on first use."""
    if config.audit.transit is not None:
        from interlock.audit.transit import TransitSigner

        return TransitSigner(config.audit.origin, config.audit.transit)
    key_path = config.audit.key or config.data_dir / "audit.key"
    return Signer(config.audit.origin, load_or_create_key(key_path))


def witnesses_for(config: Config) -> Witnesses | None:
    """The configured witnesses, their keys checked now rather than at the first checkpoint."""
    if not config.audit.witnesses:
        return None
    try:
        found = [Witness(w.url, WitnessKey.parse(w.key)) for w in config.audit.witnesses]
    except CheckpointError as exc:
        raise ConfigError(f"audit.witnesses: {exc}") from None
    return Witnesses(found, config.audit.witness_timeout)


def store_for(config: Config) -> AuditStore:
    return open_store(config.audit.store, config.data_dir)


def log_for(config: Config) -> AuditLog:
    a = config.audit
    return AuditLog(
        # A write cut short by write_timeout is rolled back within the same bound.
        open_store(a.store, config.data_dir, timeout=a.write_timeout),
        signer_for(config),
        a.origin,
        max_batch=a.max_batch,
        max_delay=a.max_delay_ms / 1000,
        max_pending=a.max_pending,
        loss_window=a.loss_window_ms / 1000,
        write_timeout=a.write_timeout,
        checkpoint_interval=a.checkpoint_interval,
        witnesses=witnesses_for(config),
    )


def open_store(url: str, base: Path | None = None, timeout: float | None = None) -> AuditStore:
    """The store for `url`. SQLite follows the usual URL convention: `sqlite:///audit.db`
    is relative (to `base`, the data directory), `sqlite:////var/lib/x.db` absolute.
    `timeout` bounds each PostgreSQL command (default `postgres.COMMAND_TIMEOUT_S`)."""
    # Imported on use: asyncpg loads only where PostgreSQL is configured.
    if url.startswith("sqlite:///"):
        from interlock.audit.sqlite import SqliteStore

        path = Path(url[len("sqlite:///") :])
        if not path.is_absolute() and base is not None:
            path = base / path
        return SqliteStore(path)
    if url.startswith(("postgresql://", "postgres://")):
        from interlock.audit.postgres import PostgresStore

        return PostgresStore(url) if timeout is None else PostgresStore(url, timeout)
    raise ConfigError(f"audit.store: unsupported URL {url.split(':')[0]}://...")
