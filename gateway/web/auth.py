"""Who is asking: signed session cookies, the operator's secret, and the limit on wrong links.

A member logs in with the link the operator handed over (``/m/<meter>?t=<token>``): the token is
checked against the stored hash once, and the browser gets a session cookie instead, so the
secret leaves the address bar and the history at once. The cookie is HttpOnly (no script reads
it), SameSite=Strict (no other site's page sends it), Secure when the public URL is https, and
carries ``role:subject:expiry:fingerprint`` signed with HMAC-SHA256 under a key the daemon draws
at start-up (a restart ends every session; the link logs in again). The fingerprint is the start
of the stored token hash, so re-issuing a member's link ends that member's sessions too.

Wrong links are counted per client address in a sliding window; past ``login_failures`` the
address is answered 429 until the window has passed. The table is bounded: a flood of
addresses evicts the oldest, never grows the daemon.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path

COOKIE = "tmeter_session"
MAX_ADDRESSES = 4096
FINGERPRINT = 16  # hex characters of the token hash bound into a session


@dataclass(frozen=True)
class Session:
    role: str  # "member" or "operator"
    subject: str  # the meter id, or "-" for the operator
    fingerprint: str


class Sessions:
    def __init__(self, lifetime_s: int, key: bytes | None = None) -> None:
        self.key = key or secrets.token_bytes(32)
        self.lifetime_s = lifetime_s

    def _mac(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def issue(self, role: str, subject: str, stored_hash: str, now: float | None = None) -> str:
        expiry = int((now if now is not None else time.time()) + self.lifetime_s)
        text = f"{role}:{subject}:{expiry}:{stored_hash[:FINGERPRINT]}"
        return f"{text}:{self._mac(text)}"

    def check(self, value: str | None, now: float | None = None) -> Session | None:
        """The session a cookie value carries, None if it is forged, malformed or expired."""
        if not value or len(value) > 256:
            return None
        text, _, mac = value.rpartition(":")
        if not hmac.compare_digest(mac.encode(), self._mac(text).encode()):
            return None
        try:
            role, subject, expiry, fingerprint = text.split(":")
            if int(expiry) < (now if now is not None else time.time()):
                return None
        except ValueError:
            return None
        return Session(role, subject, fingerprint)


def fingerprint_matches(session: Session, stored_hash: str | None) -> bool:
    return stored_hash is not None and hmac.compare_digest(session.fingerprint, stored_hash[:FINGERPRINT])


class FailureLimit:
    """At most ``limit`` failed logins per address within ``window_s`` seconds."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()
        self.failed = 0  # counted for the operator view
        self.refused = 0

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._seen.get(address)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def blocked(self, address: str, now: float | None = None) -> bool:
        now = now if now is not None else time.monotonic()
        if len(self._recent(address, now)) >= self.limit:
            self.refused += 1
            return True
        return False

    def fail(self, address: str, now: float | None = None) -> None:
        now = now if now is not None else time.monotonic()
        times = self._recent(address, now)
        times.append(now)
        self._seen[address] = times
        self._seen.move_to_end(address)
        self.failed += 1
        while len(self._seen) > MAX_ADDRESSES:
            self._seen.popitem(last=False)


class TokenFileError(Exception):
    """The operator token file cannot be read or made: one line, the daemon does not start."""


def load_or_create_token(path: Path) -> str:
    """The operator's secret: the file's first line, or a new random one written mode 0600."""
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        return _new_token(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"operator token file {path}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    if len(token) < 16:
        raise TokenFileError(f"operator token file {path}: the token is shorter than 16 characters")
    return token


def _new_token(path: Path) -> str:
    token = secrets.token_urlsafe(24)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise TokenFileError(f"operator token file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token
