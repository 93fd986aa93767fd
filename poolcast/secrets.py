"""Keep database passwords out of everything a run logs or stores.

A source URL may carry a secret in two places: the user-info part
(``postgresql://user:secret@host/db``) and the query string (``?password=secret``,
also ``passwd``, ``pwd``, ``token``, ``api_key``, ``access_token``, ``secret``).
:func:`mask` replaces each such value with ``***``; the masked URL is what MLflow params,
Prefect flow-run parameters, logs, artifacts and the published tables see.

The run itself still needs the real URL to connect. It travels **through the environment**,
never through a flow parameter: ``POOLCAST_SOURCE_URL`` holds the full URL, and the flow's
``source`` parameter holds its masked form. :func:`reveal` turns the masked parameter back
into the real URL when (and only when) the environment's URL masks to exactly that string.
``poolcast run`` and ``poolcast serve`` split a URL given on the command line this way; a
deployment sets ``POOLCAST_SOURCE_URL`` in its job environment (or from a Prefect Secret)
and passes the masked URL as ``source``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

from poolcast.errors import SourceError

__all__ = ["MASK", "SOURCE_URL_ENV", "SecretFilter", "has_secret", "mask", "reveal", "split"]

MASK = "***"
#: Environment variable carrying the full (secret) source URL.
SOURCE_URL_ENV = "POOLCAST_SOURCE_URL"

_SECRET_KEYS = r"password|passwd|pwd|secret|token|api_key|apikey|access_token"
# scheme://user:password@  (the password may hold anything but '@' and whitespace; '/' too)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)(?=@)")
_QUERY = re.compile(rf"(?P<head>[?&;](?:{_SECRET_KEYS})=)(?P<secret>[^&#\s;]+)", re.IGNORECASE)


def mask(text: str) -> str:
    """`text` with every URL password and secret query value replaced by ``***``.

    >>> mask("postgresql://ana:s3cr3t@db:5432/sales?sslmode=require&password=x#t")
    'postgresql://ana:***@db:5432/sales?sslmode=require&password=***#t'
    """
    text = _USERINFO.sub(lambda m: m["head"] + MASK, str(text))
    return _QUERY.sub(lambda m: m["head"] + MASK, text)


def has_secret(text: str) -> bool:
    """True when `text` holds a clear (not yet masked) password or secret query value."""
    return mask(text) != str(text)


def split(url: str) -> tuple[str, str | None]:
    """``(masked URL, full URL or None)``: the full URL only when it holds a secret."""
    masked = mask(url)
    return masked, (url if masked != url else None)


def reveal(source: str, env: Mapping[str, str] | None = None) -> str:
    """The real source for a (possibly masked) `source` parameter.

    A source without ``***`` is returned unchanged. A masked one is replaced by
    ``$POOLCAST_SOURCE_URL`` when that URL masks to exactly `source`.

    Raises
    ------
    SourceError
        `source` is masked and the environment holds no matching URL.
    """
    if MASK not in source or mask(source) != source:
        return source
    env = os.environ if env is None else env
    full = env.get(SOURCE_URL_ENV)
    if full and mask(full) == source:
        return full
    hint = "it masks to a different URL" if full else "it is not set"
    raise SourceError(
        f"{source}: the source URL's password is masked (***) and {SOURCE_URL_ENV} cannot "
        f"supply it ({hint}); set {SOURCE_URL_ENV} to the full URL in the run's environment",
        source=source,
    )


class SecretFilter(logging.Filter):
    """A logging filter that masks secrets in every record's message (install on handlers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
