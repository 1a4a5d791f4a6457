"""Building the audit log a configuration describes (used by `up` and the CLI)."""

from __future__ import annotations

from interlock.audit.checkpoint import Signer, load_or_create_key
from interlock.audit.log import AuditLog
from interlock.audit.store import AuditStore, open_store
from interlock.config import Config


def signer_for(config: Config) -> Signer:
    key_path = config.audit.key or config.data_dir / "audit.key"
    return Signer(config.audit.origin, load_or_create_key(key_path))


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
        write_timeout=a.write_timeout,
        checkpoint_interval=a.checkpoint_interval,
    )
