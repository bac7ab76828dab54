"""Admin sessions: opaque random ids held server-side in the api process, with a CSRF token each.

The cookie carries only a 256-bit random id; everything else (which key signed in, its
token for calls through the gateway, the CSRF token, the clock) stays in this process's
memory. A restart of the api therefore signs everyone out, which is the safe direction.
A session ends when its key is revoked, after `session_idle_minutes` without a request,
or `session_max_hours` after sign-in.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

COOKIE = "fbx_admin"
"""The session cookie's name (HttpOnly, SameSite=Strict, Path=/admin)."""

CSRF_FIELD = "_csrf"
"""The hidden form field every admin form carries."""

CSRF_HEADER = "x-csrf-token"
"""The header the page's own fetch() calls carry instead of the form field."""

_MAX_SESSIONS = 1000


@dataclass
class Session:
    """One browser's sign-in (or, before sign-in, its sign-in form's CSRF token)."""

    id: str
    csrf: str
    created_at: float
    seen_at: float
    key_id: str | None = None
    key_name: str = ""
    token: str = field(default="", repr=False)
    flash: list[str] = field(default_factory=list)

    @property
    def signed_in(self) -> bool:
        """True once an admin key signed in with this session."""
        return self.key_id is not None

    def csrf_ok(self, sent: str | None) -> bool:
        """True when `sent` is this session's CSRF token (constant-time compare)."""
        return bool(sent) and hmac.compare_digest(self.csrf, str(sent))


class SessionStore:
    """Sessions by id, oldest evicted first past a bound (so a flood cannot fill memory)."""

    def __init__(self, idle_s: float, max_age_s: float, max_sessions: int = _MAX_SESSIONS):
        self.idle_s = idle_s
        self.max_age_s = max_age_s
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def new(self) -> Session:
        """A fresh anonymous session (for the sign-in form)."""
        now = time.time()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now)
        with self._lock:
            self._sessions[session.id] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        """The live session behind a cookie value, or None (unknown, idle or too old)."""
        if not session_id or len(session_id) > 100:
            return None
        now = time.time()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if now - session.seen_at > self.idle_s or now - session.created_at > self.max_age_s:
                del self._sessions[session_id]
                return None
            session.seen_at = now
            self._sessions.move_to_end(session_id)
            return session

    def sign_in(self, old: Session, key_id: str, key_name: str, token: str) -> Session:
        """Replace `old` with a signed-in session under a new id and CSRF token."""
        self.end(old.id)
        session = self.new()
        session.key_id, session.key_name, session.token = key_id, key_name, token
        return session

    def end(self, session_id: str) -> None:
        """Forget a session (sign-out)."""
        with self._lock:
            self._sessions.pop(session_id, None)

    def end_for_key(self, key_id: str) -> int:
        """Sign out every session of a key (it was revoked); return how many."""
        with self._lock:
            gone = [s.id for s in self._sessions.values() if s.key_id == key_id]
            for sid in gone:
                del self._sessions[sid]
        return len(gone)
