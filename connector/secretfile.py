"""Webhook secrets that `bpsm setup` generates, kept in a file readable by the owner only.

The secret is saved before the helpdesk is told about it: a setup that fails after the
webhook was created (a missing permission for the triggers, a network error) must not lose
the only copy of the key the helpdesk now signs with. A later run finds the file and uses
the same secret again.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from connector.config import MIN_WEBHOOK_SECRET_BYTES
from connector.datadir import private_dir

FILE_MODE = 0o600


def new_secret() -> str:
    return secrets.token_hex(20)  # 160 bits, 40 characters every helpdesk stores


def private(path: Path) -> None:
    """Make an existing secret file owner-only (an earlier version left it 0644)."""
    if path.exists():
        os.chmod(path, FILE_MODE)


def claim_secret(path: Path) -> str:
    """The secret stored in `path`, written there first (O_EXCL, mode 0600) when there is
    none, or when the file holds less than a usable secret."""
    private_dir(path.parent)  # a new folder is owner-only too
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        private(path)
        kept = path.read_text(encoding="utf-8").strip()
        if len(kept.encode("utf-8")) >= MIN_WEBHOOK_SECRET_BYTES:
            return kept
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    secret = new_secret()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), FILE_MODE)
        handle.write(secret + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return secret
