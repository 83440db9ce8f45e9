"""Host URIs as they may be shown: no password, no key material (pure)."""

from __future__ import annotations

import re
import urllib.parse

_SECRET_KEY = re.compile(r"pass|secret|token|key(?!file)", re.I)


def redact_uri(uri: str) -> str:
    """A URI safe to print: no password, no key material in the query."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<unparsable uri>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"{user}@{hostport}"
    query = urllib.parse.urlencode(
        [
            (k, "***" if _SECRET_KEY.search(k) else v)
            for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="/:*",
    )
    if netloc == parts.netloc and query == parts.query:
        return uri
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, uri: str) -> str:
    """``text`` with the URI and each secret in it replaced by their redacted forms."""
    text = text.replace(uri, redact_uri(uri))
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return text
    secrets = [parts.password or ""] + [
        v for k, v in urllib.parse.parse_qsl(parts.query) if _SECRET_KEY.search(k)
    ]
    for secret in secrets:
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text
