"""Basic authentication against bcrypt hashes, cheap for a scraper that comes every second.

bcrypt is slow on purpose (about 100 ms at cost 10). A (user, password) pair that passed
is remembered, a bounded number of them, as an HMAC under a key made at start-up and
kept nowhere else: the plain password is never stored, and a remembered digest is
worthless outside this process. Failures are never remembered, so every wrong guess
costs a full bcrypt check, and an unknown user costs as much as a known one (nothing
tells which users exist).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping

import bcrypt

#: Distinct (user, password) pairs remembered; the least recently used goes first.
REMEMBERED = 256
#: bcrypt reads this many bytes of a password; older versions ignore the rest silently.
MAX_PASSWORD = 72


def credentials(header: str | None) -> tuple[str, str] | None:
    """User and password of an ``Authorization: Basic ...`` header, or None."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None


class BasicAuth:
    """Checks user and password against the configured bcrypt hashes."""

    def __init__(self, users: Mapping[str, bytes], remembered: int = REMEMBERED) -> None:
        if not users:
            raise ValueError("no users")
        self._users = dict(users)
        #: The hash checked for an unknown user, so that it takes as long as a known one.
        self._decoy = next(iter(self._users.values()))
        self._key = secrets.token_bytes(32)
        self._remembered: OrderedDict[bytes, None] = OrderedDict()
        self._size = remembered
        self._lock = threading.Lock()

    def remembered(self, user: str, password: str) -> bool:
        """True when this pair passed before (fast: one HMAC, no bcrypt)."""
        digest = self._digest(user, password)
        with self._lock:
            if digest in self._remembered:
                self._remembered.move_to_end(digest)
                return True
        return False

    def verify(self, user: str, password: str) -> bool:
        """The full bcrypt check; slow, so run it off the event loop. Passes are remembered."""
        hashed = self._users.get(user)
        ok = _bcrypt_matches(password, hashed or self._decoy) and hashed is not None
        if ok:
            digest = self._digest(user, password)
            with self._lock:
                self._remembered[digest] = None
                while len(self._remembered) > self._size:
                    self._remembered.popitem(last=False)
        return ok

    def _digest(self, user: str, password: str) -> bytes:
        # A user name never holds ':' (basic auth splits at the first), so this is unambiguous.
        return hmac.digest(self._key, f"{user}:{password}".encode(), "sha256")


def _bcrypt_matches(password: str, hashed: bytes) -> bool:
    data = password.encode()
    if len(data) > MAX_PASSWORD:
        return False  # refused, never truncated to what bcrypt reads
    return bcrypt.checkpw(data, hashed)
