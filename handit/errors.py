"""Errors and warnings: every exception handit raises derives from HanditError."""
from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import unquote, unquote_plus

__all__ = ["ConfigError", "HanditConfigWarning", "HanditError"]

# Long values (a 10 MB string passed by mistake) are cut so a message stays readable.
_MAX_SHOWN = 120
_REDACTED = "<redacted>"  # redact.REDACTED; redact.py imports this module, so it is not imported here
# A query value of 16+ or a path segment or bare setting value of 20+ token characters
# holding both letters and digits is taken for a credential (webhook paths carry their
# token there: /services/T0/B0/<24 chars>, /api/webhooks/<id>/<68 chars>).
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]+")
_NOT_TOKEN = re.compile(r"[^A-Za-z0-9._~+/=-]+")
_QUERY_TOKEN, _PATH_TOKEN = 16, 20
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)([^?#]*)(.*)$", re.DOTALL)
_redactor: Any = None


def _rules() -> Any:
    global _redactor
    if _redactor is None:
        from .redact import Redactor

        _redactor = Redactor()
    return _redactor


def _token_like(text: str, length: int) -> bool:
    return (len(text) >= length and _TOKEN_CHARS.fullmatch(text) is not None
            and any(c.isdigit() for c in text) and any(c.isalpha() for c in text))


def _holds_secret(text: str, length: int) -> bool:
    """True if ``text`` holds a known secret format or a token-like run of ``length``+ characters."""
    return (_rules().redact_text(text) != text
            or any(_token_like(part, length) for part in _NOT_TOKEN.split(text)))


def _safe_params(params: str) -> str:
    out = []
    for param in params.split("&"):
        key, eq, value = param.partition("=")
        if eq and value and (_rules().is_secret_name(unquote_plus(key))
                             or _holds_secret(unquote_plus(value), _QUERY_TOKEN)):
            param = f"{key}={_REDACTED}"
        out.append(param)
    return "&".join(out)


def _safe_url(url: str) -> str:
    """A URL fit for a message: user info, secret-looking query values and token-like path segments redacted.

    Args:
        url: any URL (also an invalid one).
    Returns:
        the URL with each such part replaced by ``<redacted>``; scheme, host, port and
        the other path segments kept as written.
    """
    url = _rules().redact_text(url.strip())  # first: a secret may span '/' (a PEM key, a webhook path)
    match = _URL.match(url)
    if match is None:
        return url
    scheme, authority, path, rest = match.groups()
    if "@" in authority:
        authority = f"{_REDACTED}@{authority.rsplit('@', 1)[1]}"
    path = "/".join(_REDACTED if _holds_secret(unquote(part), _PATH_TOKEN) else part for part in path.split("/"))
    base, hash_, fragment = rest.partition("#")
    if base.startswith("?"):
        base = "?" + _safe_params(base[1:])
    if hash_:
        fragment = _safe_params(fragment) if "=" in fragment else (
            _REDACTED if _holds_secret(unquote(fragment), _QUERY_TOKEN) else fragment)
    return _rules().redact_text(scheme + authority + path + base + hash_ + fragment)


def _safe_value(value: Any) -> Any:
    """``value`` with every secret handit recognises replaced by ``<redacted>``.

    Strings that hold a URL get :func:`_safe_url`; other strings the value rules of
    :mod:`handit.redact`, and a bare token-like string is redacted whole; containers are
    redacted item by item and by key name. Other objects are returned unchanged (their
    repr is checked where it is shown).
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("latin-1")
        safe = _safe_value(text)
        return value if safe == text else safe
    if isinstance(value, str):
        if "://" in value:
            return _safe_url(value)
        if any(_token_like(part, _PATH_TOKEN) for part in _NOT_TOKEN.split(value.replace("/", " "))):
            return _REDACTED
        return _rules().redact_text(value)
    if isinstance(value, (list, tuple, dict)):
        return _rules().redact_mapping(value)
    return value


def _shown(value: object, *, secret: bool = False) -> str:
    """Return ``repr(value)``, secrets redacted, shortened for an error or warning message.

    Args:
        value: the value to show.
        secret: if true, show ``<redacted>`` instead (API keys never reach logs).
    Returns:
        a repr of at most about 120 characters.
    """
    if secret:
        return _REDACTED
    try:
        text = _rules().redact_text(repr(_safe_value(value)))
    except Exception:  # a failing __repr__ of the user's object
        text = f"<{type(value).__name__} object>"
    if len(text) > _MAX_SHOWN:
        text = text[: _MAX_SHOWN - 3] + "..."
    return text


class HanditError(Exception):
    """Base class of every exception handit raises."""


class ConfigError(HanditError, ValueError):
    """A setting was given a value handit cannot use.

    The message names the setting and the bad value, for example
    ``HANDIT_SAMPLE_RATE: 1.5 is not a number between 0 and 1``.

    Attributes:
        setting: the setting's name as the user spelled it or, for a bad value,
            its ``HANDIT_*`` name.
        value: the rejected value with any secret in it replaced by ``<redacted>``
            (the whole value for a secret setting such as ``HANDIT_API_KEY``).
        reason: what is wrong, phrased to follow the value ("is not ...").
    """

    def __init__(
        self,
        setting: str,
        value: object,
        reason: str,
        *,
        secret: bool = False,
        message: str | None = None,
    ) -> None:
        """Build the error.

        Args:
            setting: the setting's name.
            value: the rejected value.
            reason: what is wrong with it, e.g. ``"is not an integer >= 0"``.
            secret: the value is a secret: neither the message nor ``value`` shows it.
            message: the full message, when the default
                ``"{setting}: {value!r} {reason}"`` does not fit.
        """
        self.setting = setting
        secret = secret or _rules().is_secret_name(setting)
        self.value = _REDACTED if secret else _safe_value(value)
        self.reason = reason
        super().__init__(message or f"{setting}: {_shown(value, secret=secret)} {reason}")


class HanditConfigWarning(UserWarning):
    """A ``HANDIT_*`` environment variable was ignored (unknown name or bad value).

    The environment cannot raise at the user, so handit warns and falls back
    to the setting's default.
    """
