"""Transport of the HTTP exporter: one gzip body -> one POST to HANDIT_ENDPOINT -> what the answer means."""
from __future__ import annotations

import email.utils
import http.client
import ipaddress
import math
import time
import urllib.error
import urllib.request
from typing import NamedTuple
from urllib.parse import urlsplit

from ..errors import ConfigError, _safe_url

__all__ = ["Answer", "KEEP", "OK", "REJECT", "RETRY", "Transport", "check_endpoint", "is_loopback", "parse_retry_after"]

# Outcomes of one POST. KEEP: a redirect, which is not followed (the Authorization
# header would go along to wherever it points), so the batch stays in the spool.
OK, REJECT, RETRY, KEEP = "ok", "reject", "retry", "keep"
_RESPONSE_LIMIT = 64 * 1024  # bytes of a response body read (and ignored) before closing


class Answer(NamedTuple):
    """The outcome of one POST."""

    kind: str
    status: int | None
    retry_after: float | None
    detail: str
    reached: bool  # the request may have reached the receiver (False: connection refused)


class Transport:
    """POSTs one body at a time to the endpoint; never follows a redirect, never raises."""

    def __init__(self, endpoint: str, headers: dict[str, str], timeout: float, retry_after_cap: float) -> None:
        """Prepare the opener; nothing is sent yet.

        Args:
            endpoint: the checked URL (see :func:`check_endpoint`).
            headers: sent with every request (the batch id is added per request).
            timeout: seconds per request.
            retry_after_cap: the most seconds a Retry-After header is honoured.
        """
        self.endpoint = endpoint
        self.timeout = timeout
        self._headers = headers
        self._cap = retry_after_cap
        self._opener = make_opener(loopback=is_loopback(urlsplit(endpoint).hostname or ""))

    def post(self, body: bytes, batch_id: str) -> Answer:
        """POST one body once under ``batch_id``.

        Args:
            body: the gzip body.
            batch_id: its X-Handit-Batch-Id.
        Returns:
            the outcome: OK, REJECT (a 4xx), RETRY (network error, 408, 429, 5xx) or KEEP (a redirect).
        """
        headers = dict(self._headers)
        headers["X-Handit-Batch-Id"] = batch_id
        request = urllib.request.Request(self.endpoint, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read(_RESPONSE_LIMIT)
                return Answer(OK, response.status, None, "", True)
        except urllib.error.HTTPError as exc:
            status = exc.code
            wait = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None, self._cap)
            exc.close()
            if status in (408, 429) or status >= 500:
                return Answer(RETRY, status, wait, f"HTTP {status}", True)
            if 300 <= status < 400:
                return Answer(KEEP, status, None, f"HTTP {status} redirect (not followed)", True)
            return Answer(REJECT, status, None, f"HTTP {status}", True)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            refused = isinstance(reason, ConnectionRefusedError)
            return Answer(RETRY, None, None, f"{type(reason).__name__}: {reason}", not refused)


def check_endpoint(endpoint: object, api_key: str | None, allow_insecure_http: bool) -> str:
    """Validate HANDIT_ENDPOINT and HANDIT_API_KEY; returns the endpoint's host. Raises ConfigError."""
    if not isinstance(endpoint, str):
        raise ConfigError("HANDIT_ENDPOINT", endpoint, "is not a URL string")
    try:
        parts = urlsplit(endpoint.strip())
        host = parts.hostname or ""
        parts.port  # raises ValueError for a port out of range
    except ValueError:
        reason: str | None = "is not a valid URL (check the port and any [IPv6] brackets)"
    else:
        if any(c.isspace() or not c.isprintable() or not c.isascii() for c in endpoint.strip()):
            reason = "contains spaces, control or non-ASCII characters (percent-encode them)"
        elif parts.scheme not in ("http", "https"):
            reason = "is not an http:// or https:// URL"
        elif not host:
            reason = "has no host"
        elif "@" in parts.netloc:
            reason = "contains credentials; pass the key as HANDIT_API_KEY instead"
        elif parts.scheme == "http" and api_key and not allow_insecure_http and not is_loopback(host):
            reason = ("is plain http:// to a non-loopback host, so the API key would travel unencrypted; "
                      "use https://, or allow_insecure_http=True (HANDIT_ALLOW_INSECURE_HTTP=1)")
        else:
            reason = None
    if reason:
        message = f"HANDIT_ENDPOINT: {_safe_url(endpoint)!r} {reason}"
        raise ConfigError("HANDIT_ENDPOINT", endpoint, reason, message=message)
    if api_key is not None and (not isinstance(api_key, str) or not api_key.isascii() or not api_key.isprintable()):
        raise ConfigError("HANDIT_API_KEY", api_key, "is not a string of printable ASCII characters", secret=True)
    return host


def is_loopback(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1 (also as ::ffff:127.x.y.z)."""
    host = host.rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def make_opener(loopback: bool) -> urllib.request.OpenerDirector:
    """An opener that honours proxy settings (never for loopback) and follows no redirects."""
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler({} if loopback else None), urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(), urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def parse_retry_after(value: str | None, cap: float) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - time.time()  # naive dates are UTC per RFC 9110
    return min(max(seconds, 0.0), cap) if math.isfinite(seconds) else None
