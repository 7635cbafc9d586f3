"""Redaction stage: preview strings and names -> the same with secrets replaced by a marker.

Two kinds of rules, both decided here and nowhere else:

* Name rules (:meth:`Redactor.is_secret_name`) say whether the value stored under an
  argument name, dict key, header name or query key is a secret. They match on word
  parts, so ``monkey`` and ``author`` stay visible while ``api_key`` and ``authToken``
  do not.
* Value rules (:meth:`Redactor.redact_text`) find well-known secret formats anywhere in
  a string (provider keys, JWTs, PEM private keys, URL credentials, ``key=value`` pairs
  with a secret key, card numbers that pass the Luhn check) and replace each with
  :data:`REDACTED`, which never echoes any part of the secret.

Pure Python; nothing here calls user code.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote_plus

from handit.errors import ConfigError

__all__ = ["REDACTED", "Redactor"]

REDACTED = "<redacted>"
"""The marker that replaces a secret. It carries no part of the secret, not even its length."""

# ---------------------------------------------------------------------------------------
# Name rules
# ---------------------------------------------------------------------------------------
# Word parts: "XApiKey" -> x/api/key, "HTTP_AUTHORIZATION" -> http/authorization,
# "csrfToken" -> csrf/token, "db-password2" -> db/password/2.
_WORD_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+").findall

# A part from this set anywhere in the name makes it secret ("db_password_hash" too).
_STRONG_PARTS = frozenset({
    "password", "passwd", "pwd", "passphrase", "passcode", "secret", "secrets",
    "credential", "credentials", "cred", "creds", "cookie", "cookies", "bearer",
    "cvv", "cvc",
    # one-word compounds of the pair rules below
    "apikey", "apikeys", "privatekey", "secretkey", "accesskey", "accesstoken",
    "authtoken", "refreshtoken", "idtoken", "csrftoken", "xsrftoken", "sessionid",
    "sessid", "phpsessid", "jsessionid", "sessionkey", "sessiontoken", "clientsecret",
    "setcookie", "xapikey",
})
# Secret when it is the last part (after dropping value-like suffixes): "auth", "basic_auth",
# "Proxy-Authorization", "db_pass", "user_jwt", "X-Hub-Signature-256".
_LAST_PARTS = frozenset({
    "auth", "authorization", "authorisation", "pass", "jwt", "signature", "sig",
})
# "auth_header", "authorization_code" are secret; "auth_types", "auth_url" are not.
_AUTH_FOLLOWERS = frozenset({
    "header", "headers", "key", "keys", "token", "tokens", "string", "str", "value",
    "val", "code", "pair", "tuple", "data",
})
# "<qualifier>_key" is secret ("api_key", "signing_key"); "primary_key", "sort_key" are not.
_KEY_QUALIFIERS = frozenset({
    "api", "access", "secret", "private", "signing", "sign", "encryption", "encrypt",
    "decryption", "master", "client", "consumer", "app", "application", "ssh", "gpg", "pgp",
    "hmac", "shared", "auth", "session", "license", "licence", "service", "account",
    "subscription", "admin", "root", "crypto", "cipher", "aes", "rsa", "jwt", "webhook",
    "deploy", "openai", "anthropic", "stripe", "aws", "azure", "gcp", "google",
})
# The last part "token" is secret unless its qualifier marks a tokenizer or pagination token
# ("pad_token", "eos_token", "next_token", "page_token") or a count ("max_token").
_TOKEN_SAFE_QUALIFIERS = frozenset({
    "pad", "eos", "bos", "unk", "sep", "cls", "mask", "special", "start", "end", "stop",
    "page", "next", "prev", "previous", "continuation", "cursor", "pagination", "sync",
    "max", "min", "num", "n", "total", "count", "is", "has", "first", "last",
})
# The plural "tokens" (usually a count or a list of LLM tokens) is secret only after these.
_TOKENS_SECRET_QUALIFIERS = frozenset({
    "access", "auth", "refresh", "id", "api", "bearer", "session", "oauth", "csrf", "xsrf",
    "security", "secret", "private", "personal", "github", "gitlab", "slack", "bot",
    "user", "app", "service", "client", "hf", "jwt",
})
# Suffixes that name a representation of the same value: "token_value", "auth_str".
_VALUE_SUFFIXES = frozenset({
    "value", "val", "str", "string", "raw", "b64", "base64", "hex", "bytes", "enc",
    "encoded", "plain", "plaintext", "text",
})
# A last part that names something *about* a secret, not the secret itself:
# "password_reset_url", "session_id_prefix", "SESSION_COOKIE_NAME", "password_min_length",
# "POSTGRES_PASSWORD_FILE" (a path). Checked after dropping value suffixes, so
# "password_value" stays secret; "password_hash" stays secret (a hash is crackable).
_ABOUT_PARTS = frozenset({
    "url", "urls", "uri", "link", "links", "page", "form", "field", "fields", "label",
    "prompt", "policy", "policies", "rule", "rules", "length", "len", "strength", "min",
    "max", "expiry", "expires", "expiration", "ttl", "age", "changed", "updated", "created",
    "at", "count", "attempts", "retries", "prefix", "name", "names", "domain", "path",
    "file", "dir", "type", "types", "kind", "format", "required", "enabled", "reset",
    "samesite", "secure", "httponly", "provider", "backend", "scheme",
})
_MAX_NAME = 200  # longer strings are data, not names
_NAME_CACHE_MAX = 4096
# Header values and URLs found to hold no secret, remembered per redactor: a program's HTTP
# calls repeat the same User-Agent, Accept, Content-Type, Server ... and URLs, and scanning
# them again cost most of recording an exchange. Only clean strings are kept (never a
# secret), up to _CLEAN_MAX_LEN characters each, the set emptied when full.
_CLEAN_CACHE_MAX = 4096
_CLEAN_MAX_LEN = 512


def _remember(clean: set[str], text: str) -> None:
    if len(clean) >= _CLEAN_CACHE_MAX:
        clean.clear()
    clean.add(text)


def _builtin_secret_name(name: str) -> bool:
    """Apply the built-in word-part rules to one name (see the rule tables above)."""
    parts = [p.lower() for p in _WORD_PARTS(name)]
    if not parts:
        return False
    end = len(parts)
    while end > 1 and (parts[end - 1] in _VALUE_SUFFIXES or parts[end - 1].isdigit()):
        end -= 1
    last = parts[end - 1]
    if end >= 2 and last in _ABOUT_PARTS:
        return False
    for part in parts:
        if part in _STRONG_PARTS:
            return True
    prev = parts[end - 2] if end >= 2 else ""
    if last == "token":
        return prev not in _TOKEN_SAFE_QUALIFIERS
    if last == "tokens":
        return prev in _TOKENS_SECRET_QUALIFIERS
    if last in _LAST_PARTS:
        return True
    for i in range(len(parts) - 1):
        a, b = parts[i], parts[i + 1]
        if (b == "key" or b == "keys") and a in _KEY_QUALIFIERS:
            return True
        if (a == "auth" or a == "authorization") and b in _AUTH_FOLLOWERS:
            return True
        if a == "session" and (b == "id" or b == "key"):
            return True
    return False


# ---------------------------------------------------------------------------------------
# Value rules: one combined pattern
# ---------------------------------------------------------------------------------------
# Every branch starts with a literal character, so the compiled pattern carries a first-
# character set and ``search`` skips in C to the next "-", "_", ".", ":", "=", "A", "B",
# "b", "J" or digit 2-6. Measured on CPython 3.11: prose at ~200 MB/s instead of ~30 MB/s
# with class-first branches, a 53-character sentence in 0.8 us instead of 13 us. So the
# branches for prefixed tokens
# start at the first "-"/"_"/"." (or the "J" of "eyJ") and check the prefix with fixed-width
# lookbehinds; :meth:`Redactor._scan` moves the start back over the alphanumeric prefix.
# The empty named group at the end of each branch names it in ``match.lastgroup``.
_T = r"[A-Za-z0-9_\-]"  # token character
_BRANCHES = [
    # PEM private key block; when cut off before its END line, up to the first character
    # a PEM body (base64, line breaks, escaped "\n", "Proc-Type:" headers) cannot hold.
    r"-----BEGIN[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?"
    r"-----END[A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|[A-Za-z0-9+/=\s\\:,\-]*)(?P<pem>)",
    # scheme://user:password@host (the password may contain '@': the last one wins).
    r"://[^\s:/?#@\"'<>]{0,128}:(?P<uc_pw>[^\s/?#\"'<>]{1,256})@(?P<urlcred>)",
    r"\.slack\.com/(?:services|workflows|triggers)/(?P<hook_val>[A-Za-z0-9_/\-]{8,})(?P<hook>)",
    r"\.com/api/webhooks/(?P<dhook_val>[A-Za-z0-9_/\-]{8,})(?P<dhook>)",
    # OpenAI (sk-, sk-proj-, sk-svcacct-) and Anthropic (sk-ant-api03-): 16+ characters
    # with a digit or a capital ("sk-learn-compatible" stays visible).
    rf"-(?<=sk-)(?<!{_T}sk-)(?={_T}*[0-9A-Z]){_T}{{16,}}(?P<openai>)",
    r"_(?<=[sr]k_)(?<![A-Za-z0-9_][sr]k_)(?:live|test)_[A-Za-z0-9]{10,}(?P<stripe>)",
    r"_(?<=whsec_)(?<![A-Za-z0-9_]whsec_)[A-Za-z0-9+/=]{20,}(?P<stripe_wh>)",
    r"_(?<=hf_)(?<![A-Za-z0-9_]hf_)(?=[A-Za-z0-9]*[A-Z])(?=[A-Za-z0-9]*[a-z])"
    r"[A-Za-z0-9]{20,}(?P<hf>)",
    r"A(?<![A-Za-z0-9]A)[KS]IA(?:[A-Z0-9]{16}|[A-Z0-9]{8,15}\Z)(?P<aws>)",
    rf"A(?<!{_T}A)Iza[0-9A-Za-z_\-]{{20,}}(?P<google>)",
    r"_(?<=gh[pousr]_)(?<![A-Za-z0-9_]gh[pousr]_)[A-Za-z0-9]{20,}(?P<github>)",
    r"_(?<=github_)(?<![A-Za-z0-9_]github_)pat_[A-Za-z0-9_]{20,}(?P<github_pat>)",
    rf"-(?:(?<=glpat-)|(?<=glptt-)|(?<=glcbt-)|(?<=glimt-)|(?<=gldt-)|(?<=glrt-)|(?<=glft-)"
    rf"|(?<=glsoat-)){_T}{{16,}}(?P<gitlab>)",
    rf"-(?:(?<=xox[abeprs]-)|(?<=xapp-))(?<!{_T}xox[abeprs]-)[A-Za-z0-9\-]{{10,}}(?P<slack>)",
    r"_(?<=npm_)(?<![A-Za-z0-9_]npm_)[A-Za-z0-9]{30,}(?P<npm>)",
    rf"-(?<=pypi-)(?<!{_T}pypi-)AgE{_T}{{30,}}(?P<pypi>)",
    rf"\.(?<=SG\.)(?<!{_T}SG\.){_T}{{16,}}(?:\.{_T}*)?(?P<sendgrid>)",
    r"_(?<=shp[a-z][a-z]_)(?<![A-Za-z0-9_]shp[a-z][a-z]_)[a-fA-F0-9]{20,}(?P<shopify>)",
    r"_(?<=do[opr]_)(?<![A-Za-z0-9_]do[opr]_)v1_[a-f0-9]{20,}(?P<digitalocean>)",
    # JWT / JWS / JWE: base64url JSON header "eyJ..." then at least the start of a payload.
    rf"J(?<=eyJ)(?<!{_T}eyJ){_T}{{8,}}\.{_T}{{4,}}(?:\.{_T}*){{0,3}}(?P<jwt>)",
    # "Bearer <token>" / "Basic <base64>"; the value is checked in Python (_looks_random).
    r"B(?<![A-Za-z0-9_\-]B)(?:earer|EARER|asic|ASIC)[ \t]+"
    r"(?P<scheme_val>[A-Za-z0-9._~+/\-]{8,}=*)(?P<scheme>)",
    r"b(?<![A-Za-z0-9_\-]b)(?:earer|asic)[ \t]+"
    r"(?P<scheme_val2>[A-Za-z0-9._~+/\-]{8,}=*)(?P<scheme2>)",
    # key=value, key: value, "key": "value", \"key\": \"value\": the branch starts at the
    # separator; the key before it is read and checked in Python.
    r":(?![:/])[ \t]{0,8}(?P<kv_q>\\{0,2}[\"'])?(?P<kv>)",
    r"=(?!=)[ \t]{0,8}(?P<kv_q2>\\{0,2}[\"'])?(?P<kv2>)",
]
# Card numbers: 13-19 digits, spaces or dashes allowed, first digit 2-6 (Mastercard 2/5,
# Amex/Diners/JCB 3, Visa 4, Discover/UnionPay 6: nanosecond timestamps start with 1);
# the Luhn check runs in Python. One branch per first digit keeps every branch literal-first.
_BRANCHES += [
    rf"{d}(?<![0-9.]{d})(?:[ \-]?[0-9]){{12,18}}(?![0-9])(?P<card{d}>)" for d in "23456"
]
_SCAN = re.compile("|".join(_BRANCHES)).search
_MIN_SECRET = 5  # "pwd=x" is the shortest string any rule redacts
_SHORT = 12  # below 12 characters only "key=value"/"key: value" (and "://:p@") can match
# Kinds whose match starts after an alphanumeric prefix ("sk", "ghp", "xoxb", "ey", ...).
_PREFIXED = frozenset({
    "openai", "stripe", "stripe_wh", "hf", "github", "github_pat", "gitlab", "slack",
    "npm", "pypi", "sendgrid", "shopify", "digitalocean", "jwt",
})
# The key before a separator, read backwards: spaces, closing quote(s), then the key.
_KEY_BACKWARDS = re.compile(r"[ \t]{0,8}[\"'\\]{0,3}([A-Za-z0-9_.\-]{1,64})").match
_BARE_EQ = re.compile(r"[^\s&,;\"'<>)\]}]*").match  # value after "=": up to a delimiter
_BARE_COLON = re.compile(r"[^\r\n\"',}\]]*").match  # value after ":": rest of the line
_SCHEME_REST = re.compile(r"[ \t]+[^\s&,;\"'<>)\]}]+").match
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "digest", "negotiate", "ntlm", "apikey"})
_SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
})
_MAX_NESTING = 64  # redact_mapping gives up (to the marker) below this depth
_KEY_PARTS = re.compile(r"[A-Za-z0-9]+").findall
_WORDLIKE = re.compile(r"[A-Za-z][a-z]*[0-9]{0,3}\Z").match  # "learn", "Estimator", "v2", "api03"
# Words a status line puts after a secret's name ("auth: ok"); never a credential.
_PLACEHOLDERS = frozenset({
    "ok", "yes", "no", "true", "false", "none", "null", "nil", "n/a", "na", "required",
    "optional", "enabled", "disabled", "on", "off", "missing", "invalid", "expired",
    "unknown", "set", "unset", "empty", "hidden", "masked", "redacted", REDACTED, "valid",
    "success", "failed", "denied", "granted", "pending", "present", "absent", "<none>",
})


def _luhn(number: str) -> bool:
    """Return True if the digits of ``number`` (separators ignored) pass the Luhn check."""
    total = 0
    odd = False
    for ch in reversed(number):
        if ch < "0" or ch > "9":
            continue
        d = ord(ch) - 48
        if odd:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        odd = not odd
    return total % 10 == 0


def _openai_body_is_key(body: str) -> bool:
    """Return True if the text after ``sk-`` holds a generated part, not only words.

    ``sk-learn-compatible-estimator-v2`` is words ("v2", "api03" count as words); a key
    has a part of 6+ characters that is not one (``sk-ab1cdefghij...``, random base64url).
    """
    for part in _KEY_PARTS(body):
        if len(part) >= 6 and _WORDLIKE(part) is None:
            return True
    return False


def _jwt_header_is_json(header: str) -> bool:
    """Return True if a JWT's first segment decodes to printable JSON text (``{"alg":...``).

    ``eyJustKidding`` starts like one but decodes to bytes no JSON header holds.
    """
    header = header[: 4 * 64]  # a header is a few dozen characters; its start decides
    header = header[: len(header) - len(header) % 4]
    try:
        raw = base64.urlsafe_b64decode(header)
    except (ValueError, binascii.Error):
        return False
    return raw.startswith(b'{"') and all(0x20 <= b < 0x7F or b in (9, 10, 13) for b in raw)


def _placeholder(value: str) -> bool:
    """Return True if a value under a secret name says something about it, not the secret.

    ``auth: ok``, ``password: required``, ``token=none``, ``password: ********``.
    """
    v = value.strip().strip("\\\"'").strip()
    if not v:
        return False
    return v.lower() in _PLACEHOLDERS or (len(v) >= 3 and v.strip("*\u2022") == "")


def _looks_random(value: str) -> bool:
    """Return True if a Bearer/Basic value looks like a credential rather than a word."""
    if "=" in value:
        return True
    rest = value[1:]
    if any("0" <= c <= "9" for c in value):
        return True
    return any(c.isupper() for c in rest) and any(c.islower() for c in rest)


def _value_end(s: str, i: int, sep: str, quote: str | None) -> int:
    """Return where the value that starts at ``s[i]`` ends (exclusive).

    Args:
        s: The text.
        i: Index of the first character of the value (after any opening quote).
        sep: ``":"`` or ``"="``, the separator that preceded the value.
        quote: The opening quote (possibly backslash-escaped), or None for a bare value.

    Returns:
        The index of the closing quote or delimiter, or ``len(s)`` when the value runs to
        the end (a string cut in the middle of a secret).
    """
    n = len(s)
    if quote:
        if len(quote) > 1:  # escaped JSON: \"value\"
            j = s.find(quote, i)
            return n if j < 0 else j
        j = i
        while True:
            j = s.find(quote, j)
            if j < 0:
                return n
            k = j
            while k > i and s[k - 1] == "\\":
                k -= 1
            if (j - k) % 2 == 0:
                return j
            j += 1
    if i < n and s[i] in "{[":
        depth = 0
        for j in range(i, n):
            c = s[j]
            if c == "{" or c == "[":
                depth += 1
            elif c == "}" or c == "]":
                depth -= 1
                if depth == 0:
                    return j + 1
        return n
    m = _BARE_COLON(s, i) if sep == ":" else _BARE_EQ(s, i)
    end = m.end() if m is not None else i
    if end > i and s[i:end].strip().lower() in _AUTH_SCHEMES:
        rest = _SCHEME_REST(s, end)
        if rest is not None:
            end = rest.end()
    return end


class Redactor:
    """Name and value redaction rules, compiled once and shared by every stage.

    Name rules match on word parts: ``password``, ``passwd``, ``pwd``, ``secret``,
    ``credential(s)``, ``cookie``, ``bearer`` anywhere; ``token`` as the last part unless
    its qualifier marks a tokenizer, pagination or count token (``pad_token``,
    ``next_token``, ``max_token``); ``tokens`` only after a secret qualifier
    (``access_tokens``; ``max_tokens`` stays visible); ``auth``/``authorization``/``pass``/
    ``jwt``/``signature`` as the last part or ``auth`` before ``header``/``token``/``key``/...
    (``auth_types`` stays visible); ``key`` only after a qualifier such as ``api``,
    ``access``, ``secret``, ``private``, ``signing`` (``primary_key``, ``sort_key``,
    ``key_count`` stay visible); ``session`` before ``id``/``key``. Trailing
    ``value``/``str``/digits are ignored when finding the last part.
    """

    __slots__ = ("_extra", "_replace", "_safe", "_names", "_clean_values", "_clean_urls")

    def __init__(
        self,
        extra_name_pattern: str | None = None,
        replace_names: bool = False,
        safe_keys: Iterable[str] = (),
    ) -> None:
        """Build the rules.

        Args:
            extra_name_pattern: A regex searched case-insensitively in names (HANDIT_REDACT).
                It extends the built-in name rules, or replaces them when ``replace_names``.
            replace_names: Use only ``extra_name_pattern`` for names (with no pattern, no
                name is secret). Value formats are always detected.
            safe_keys: Names that are never secret, compared case-insensitively and exactly.

        Raises:
            ConfigError: ``extra_name_pattern`` is not a valid regular expression.
        """
        self._extra: re.Pattern[str] | None = None
        if extra_name_pattern:
            try:
                self._extra = re.compile(extra_name_pattern, re.IGNORECASE)
            except re.error as exc:
                reason = f"is not a valid regular expression ({exc})"
                raise ConfigError("HANDIT_REDACT", extra_name_pattern, reason) from None
        self._replace = bool(replace_names)
        self._safe = frozenset(k.lower() for k in safe_keys)
        self._names: dict[str, bool] = {}
        self._clean_values: set[str] = set()  # header values redact_text() left as they were
        self._clean_urls: set[str] = set()  # URLs redact_url() left as they were

    def __repr__(self) -> str:
        extra = self._extra.pattern if self._extra is not None else None
        return f"Redactor(extra_name_pattern={extra!r}, replace_names={self._replace})"

    def is_secret_name(self, name: str) -> bool:
        """Tell whether the value stored under ``name`` must be redacted.

        Args:
            name: An argument name, dict key, header name or query key.

        Returns:
            True if ``name`` matches the name rules (see the class docstring) or the extra
            pattern, and is not one of the safe keys.
        """
        cached = self._names.get(name)
        if cached is not None:
            return cached
        result = self._decide(name)
        if len(self._names) >= _NAME_CACHE_MAX:
            self._names.clear()
        self._names[name] = result
        return result

    def _decide(self, name: str) -> bool:
        if type(name) is not str:
            name = str.__str__(name)
        if len(name) > _MAX_NAME:
            return False
        if self._safe and name.lower() in self._safe:
            return False
        if self._extra is not None and self._extra.search(name) is not None:
            return True
        return not self._replace and _builtin_secret_name(name)

    def redact_text(self, s: str) -> str:
        """Replace every well-known secret found in ``s`` with :data:`REDACTED`.

        Finds provider keys (OpenAI, Anthropic, Hugging Face, AWS, GitHub, GitLab, Slack,
        Stripe, Google, npm, PyPI, SendGrid, Shopify, DigitalOcean), JWTs, ``Bearer``/
        ``Basic`` credentials, PEM private keys (also without their END line), passwords in
        URLs, Slack/Discord webhook paths, values under secret-named keys in ``key=value``,
        ``key: value`` and JSON text, and card numbers that pass the Luhn check. Values that
        run to the end of ``s`` (a string cut mid-secret) are redacted to the end.

        Args:
            s: Any text.

        Returns:
            ``s`` itself when nothing was found, else a copy with each secret replaced.
        """
        n = len(s)
        if n < _SHORT and (n < _MIN_SECRET or (":" not in s and "=" not in s)):
            return s
        m = _SCAN(s)
        if m is None:
            return s
        return self._scan(s, m)

    def _scan(self, s: str, m: re.Match[str] | None) -> str:
        out: list[str] = []
        last = 0  # s[last:] is not emitted yet
        pos = 0  # where the next search starts
        while True:
            if m is None:
                m = _SCAN(s, pos)
                if m is None:
                    break
            kind = m.lastgroup
            start = m.start()
            end = m.end()
            if kind == "kv" or kind == "kv2":
                key = _KEY_BACKWARDS(s[max(last, start - 76) : start][::-1])
                if key is None or not self.is_secret_name(key.group(1)[::-1]):
                    pos = start + 1  # the value may still hold a known format
                else:
                    quote = m.group("kv_q" if kind == "kv" else "kv_q2")
                    vend = _value_end(s, end, s[start], quote)
                    if vend > end and not (vend - end <= 16 and _placeholder(s[end:vend])):
                        out.append(s[last:end])
                        out.append(REDACTED)
                        last = vend
                    pos = max(vend, end)
                m = None
                continue
            m_ = m
            m = None
            if kind in _PREFIXED:
                while start > last and s[start - 1].isalnum():
                    start -= 1
                if kind == "openai" and not _openai_body_is_key(m_.group()):
                    pos = end
                    continue
                if kind == "jwt" and not _jwt_header_is_json(s[start : s.find(".", start)]):
                    pos = end
                    continue
            elif kind == "urlcred":
                start = m_.start("uc_pw")
                end -= 1  # keep the '@'
            elif kind == "scheme" or kind == "scheme2":
                group = "scheme_val" if kind == "scheme" else "scheme_val2"
                start = m_.start(group)
                if not _looks_random(m_.group(group)):
                    pos = start
                    continue
            elif kind == "hook":
                start = m_.start("hook_val")
            elif kind == "dhook":
                start = m_.start("dhook_val")
            elif kind is not None and kind.startswith("card") and not _luhn(m_.group()):
                pos = end
                continue
            out.append(s[last:start])
            out.append(REDACTED)
            last = end
            pos = m_.end()
        if not out:
            return s
        out.append(s[last:])
        return "".join(out)

    def redact_url(self, url: str) -> str:
        """Redact a URL: the userinfo password, secret-named query and fragment parameters,
        parameters whose decoded value holds a secret, then every format in the rest.

        Args:
            url: A URL, absolute or relative.

        Returns:
            The URL with secrets replaced by :data:`REDACTED` (the rest left as written).
        """
        if url in self._clean_urls:
            return url
        base, hash_, fragment = url.partition("#")
        path, qmark, query = base.partition("?")
        if qmark:
            query = self._redact_params(query)
        if hash_ and "=" in fragment:
            fragment = self._redact_params(fragment)
        out = self.redact_text(path + qmark + query + hash_ + fragment)
        if out == url and len(url) <= _CLEAN_MAX_LEN:
            _remember(self._clean_urls, url)
        return out

    def _redact_params(self, query: str) -> str:
        params = query.split("&")
        for i, param in enumerate(params):
            key, eq, value = param.partition("=")
            if not eq or not value:
                continue
            if self.is_secret_name(unquote_plus(key)):
                params[i] = key + "=" + REDACTED
                continue
            decoded = unquote_plus(value)
            if self.redact_text(decoded) is not decoded:
                params[i] = key + "=" + REDACTED
        return "&".join(params)

    def redact_headers(
        self, headers: Mapping[str, str] | Iterable[tuple[str, str]]
    ) -> dict[str, str]:
        """Redact HTTP headers.

        Args:
            headers: A mapping (``requests``/``httpx`` headers, a dict) or ``(name, value)``
                pairs; names and values may be ``str`` or ``bytes`` (decoded as Latin-1).

        Returns:
            A new dict: ``Authorization``, ``Proxy-Authorization``, ``Cookie``,
            ``Set-Cookie``, ``X-Api-Key`` and every secret-named header map to
            :data:`REDACTED`; other values pass through :meth:`redact_text`. Repeated
            names are joined with ``", "``.
        """
        items = headers.items() if isinstance(headers, Mapping) else headers
        out: dict[str, str] = {}
        for name, value in items:
            name = name.decode("latin-1") if isinstance(name, (bytes, bytearray)) else str(name)
            if isinstance(value, (bytes, bytearray)):
                value = value.decode("latin-1")
            elif type(value) is not str:
                value = str(value)
            low = name.lower()
            if (low in _SECRET_HEADERS and low not in self._safe) or self.is_secret_name(name):
                value = REDACTED
            elif value not in self._clean_values:
                redacted = self.redact_text(value)
                if redacted is value and len(value) <= _CLEAN_MAX_LEN:
                    _remember(self._clean_values, value)
                value = redacted
            out[name] = out[name] + ", " + value if name in out else value
        return out

    def redact_mapping(self, value: Any) -> Any:
        """Redact a JSON-like value: dicts and lists recursively, strings by their text.

        Args:
            value: A decoded JSON body, or any nesting of dict, list, tuple, str and bytes.

        Returns:
            A redacted copy: values under secret-named string keys become
            :data:`REDACTED`, strings pass through :meth:`redact_text`, bytes are scanned
            as text; other objects are returned unchanged. Cycles and nesting deeper than
            64 levels become :data:`REDACTED` (they cannot be checked).
        """
        return self._redact_obj(value, 0, [])

    def _redact_obj(self, value: Any, depth: int, seen: list[int]) -> Any:
        tp = type(value)
        if tp is str:
            return self.redact_text(value)
        if tp is dict or tp is list or tp is tuple:
            if depth >= _MAX_NESTING or id(value) in seen:
                return REDACTED
            seen.append(id(value))
            try:
                if tp is dict:
                    return {
                        k: REDACTED
                        if isinstance(k, str) and self.is_secret_name(k)
                        else self._redact_obj(v, depth + 1, seen)
                        for k, v in value.items()
                    }
                items = [self._redact_obj(v, depth + 1, seen) for v in value]
                return items if tp is list else tuple(items)
            finally:
                seen.pop()
        if tp is bytes or tp is bytearray:
            text = value.decode("latin-1")
            red = self.redact_text(text)
            return value if red is text else tp(red.encode("latin-1"))
        return value
