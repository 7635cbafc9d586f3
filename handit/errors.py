"""Errors and warnings: every exception handit raises derives from HanditError."""
from __future__ import annotations

__all__ = ["ConfigError", "HanditConfigWarning", "HanditError"]

# Long values (a 10 MB string passed by mistake) are cut so a message stays readable.
_MAX_SHOWN = 120


def _shown(value: object, *, secret: bool = False) -> str:
    """Return ``repr(value)`` shortened for an error or warning message.

    Args:
        value: the value to show.
        secret: if true, show ``<redacted>`` instead (API keys never reach logs).
    Returns:
        a repr of at most about 120 characters.
    """
    if secret:
        return "<redacted>"
    text = repr(value)
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
        value: the rejected value, unchanged.
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
            secret: hide the value in the message (it is still kept in ``value``).
            message: the full message, when the default
                ``"{setting}: {value!r} {reason}"`` does not fit.
        """
        self.setting = setting
        self.value = value
        self.reason = reason
        super().__init__(message or f"{setting}: {_shown(value, secret=secret)} {reason}")


class HanditConfigWarning(UserWarning):
    """A ``HANDIT_*`` environment variable was ignored (unknown name or bad value).

    The environment cannot raise at the user, so handit warns and falls back
    to the setting's default.
    """
