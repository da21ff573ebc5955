"""Which log a ``--db`` (or ``$AGENTLOG_DB``, or the config file's ``db``) names, and how it is shown.

- a path, or ``sqlite:///path`` (an absolute path after the three slashes): an SQLite file;
- ``postgresql://user:password@host:port/database`` (or ``postgres://``): a PostgreSQL database;
- any other ``scheme://`` is refused: agentlog would otherwise make a directory of it.

``redact(url)`` is the URL as messages show it: the password never appears in them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

from .errors import StoreError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)([^&#]*)", re.IGNORECASE)  # and the TLS key's passphrase
POSTGRES_SCHEMES = ("postgresql", "postgres")


class StoreURLError(StoreError):
    """A ``--db`` that names no log agentlog can keep (an unknown scheme, a malformed URL)."""


def scheme_of(target: str) -> str | None:
    """The URL scheme of ``target`` (lower case), or ``None`` for a plain path."""
    found = _SCHEME.match(target)
    return found.group(1).lower() if found else None


def is_postgres(target: str | os.PathLike[str]) -> bool:
    return isinstance(target, str) and scheme_of(target) in POSTGRES_SCHEMES


def sqlite_path(target: str | os.PathLike[str]) -> Path:
    """The SQLite file a path or an ``sqlite:///`` URL names; ``StoreURLError`` for anything else."""
    if not isinstance(target, str):
        return Path(target)
    scheme = scheme_of(target)
    if scheme is None:
        return Path(target).expanduser()
    if scheme == "sqlite":
        rest = target[len("sqlite://"):]
        if not rest.startswith("/"):
            raise StoreURLError(f"{redact(target)}: an SQLite URL is sqlite:/// followed by an absolute path "
                                f"(or give the path alone)")
        return Path(unquote(rest))
    if scheme in POSTGRES_SCHEMES:
        raise StoreURLError(f"{redact(target)} names a PostgreSQL database, not an SQLite file")
    raise StoreURLError(f"{redact(target)}: agentlog keeps its log in SQLite (a path, or sqlite:///path) or "
                        f"PostgreSQL (postgresql://user@host/database), not {scheme}://")


def _split_userinfo(url: str) -> tuple[str, str, str] | None:
    """``(before the password, the password, from its '@' on)`` of a URL with a password."""
    found = _SCHEME.match(url)
    if not found:
        return None
    start = found.end()
    # The last '@' ends the user information: a password holding an unescaped '@' is cut whole.
    at = url.rfind("@", start)
    if at < 0:
        return None
    colon = url.find(":", start, at)
    if colon < 0:
        return None
    return url[:colon + 1], url[colon + 1:at], url[at:]


def password_of(url: str) -> str | None:
    """The password a URL carries (in its user information or a ``password=`` parameter), as written."""
    parts = _split_userinfo(url)
    if parts and parts[1]:
        return parts[1]
    found = _QUERY_PASSWORD.search(url)
    return found.group(2) if found and found.group(2) else None


def redact(url: str | os.PathLike[str]) -> str:
    """``url`` as messages may show it: any password replaced by ``***``; a path as it is."""
    if not isinstance(url, str):
        return str(url)
    parts = _split_userinfo(url)
    if parts and parts[1]:
        url = f"{parts[0]}***{parts[2]}"
    return _QUERY_PASSWORD.sub(lambda m: m.group(1) + "***", url)


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (as written in the URL, and decoded) replaced by ``***``."""
    if secret:
        for form in sorted({secret, unquote(secret)}, key=len, reverse=True):
            text = text.replace(form, "***")
    return text
