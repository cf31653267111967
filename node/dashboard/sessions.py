"""The dashboard's logins: one-time codes exchanged for browser sessions (pure logic, no I/O).

The API token must not sit in a page's URL (history, screenshots, the Referer of a link), and
a browser cannot set an ``Authorization`` header on a navigation. So ``calinode dashboard``,
which holds the token, asks the node for a **code** (``POST /v1/dashboard/login-code``): random,
single-use and short-lived (:data:`CODE_TTL`). The browser opens ``/login?t=CODE``; the node
redeems it for a **session**, a random id sent back as an HttpOnly, SameSite=Strict cookie,
and redirects to ``/`` so the code leaves the address bar. A code read later from the history
is spent or expired.

Both tables are capped (:data:`MAX_CODES`, :data:`MAX_SESSIONS`: the oldest goes first) and
keyed by the SHA-256 of the secret, so a lookup's timing says nothing about the secret itself.
The clock is injected: tests step it.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["CODE_TTL", "COOKIE", "MAX_CODES", "MAX_SESSIONS", "SESSION_TTL",
           "DashboardSessions", "cookie_name"]

#: Seconds a login code may wait before it is redeemed.
CODE_TTL = 60.0
#: Seconds a browser session lasts (a working day); `calinode dashboard` again after that.
SESSION_TTL = 12 * 3600.0
#: Outstanding codes and live sessions kept at most (the oldest is forgotten first).
MAX_CODES = 16
MAX_SESSIONS = 64
#: The session cookie's name, before the API's port (:func:`cookie_name`).
COOKIE = "calinode_session"


def cookie_name(port: int) -> str:
    """The session cookie of the API on ``port``. Browsers keep cookies per host, not per
    port, so two nodes on 127.0.0.1 (7412 and 7422) would overwrite one another's session
    under one name; each port gets its own. (The same follows for secrecy: the browser also
    sends the cookie to any other server it visits on 127.0.0.1, which is why the session is
    only good for this one node and ends in :data:`SESSION_TTL`.)"""
    return f"{COOKIE}_{port}"


def _key(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "replace")).hexdigest()


class DashboardSessions:
    """Login codes and the sessions they became (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._codes: OrderedDict[str, float] = OrderedDict()  # key -> expiry
        self._sessions: OrderedDict[str, float] = OrderedDict()

    def mint_code(self) -> str:
        """A new one-time code, valid for :data:`CODE_TTL` seconds."""
        code = secrets.token_urlsafe(32)
        self._codes[_key(code)] = self.clock() + CODE_TTL
        while len(self._codes) > MAX_CODES:
            self._codes.popitem(last=False)
        return code

    def redeem(self, code: str) -> str | None:
        """A new session id for a valid, unspent code (which is spent now), else None."""
        expiry = self._codes.pop(_key(code), None)
        if expiry is None or expiry < self.clock():
            return None
        session = secrets.token_urlsafe(32)
        self._sessions[_key(session)] = self.clock() + SESSION_TTL
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def valid(self, session: str) -> bool:
        """``session`` is a live session id (an expired one is forgotten)."""
        key = _key(session)
        expiry = self._sessions.get(key)
        if expiry is None:
            return False
        if expiry < self.clock():
            del self._sessions[key]
            return False
        return True

    def end(self, session: str) -> None:
        """Forget ``session`` (logout)."""
        self._sessions.pop(_key(session), None)

    def __len__(self) -> int:
        return len(self._sessions)
