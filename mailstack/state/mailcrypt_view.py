"""What rendering may know of a per_user mailbox's key: its public half."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UserKey:
    address: str
    public_b64: str  # base64 of the PEM public key: a single-line userdb value
