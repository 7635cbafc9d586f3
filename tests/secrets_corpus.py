"""Test data: fake secrets in many formats, and harmless look-alikes that must stay visible.

Every secret is generated at import time from a fixed seed, so the values are the same on
every run but no token-shaped literal sits in the repository (secret scanners would flag
one). Importing this module has no other effect.

Public names:
    SECRETS: ``(format, value)`` pairs; ``value`` is what a program would hold (a bare key,
        an ``Authorization`` value, a URL with a password, a JSON body...).
    SECRET_CORES: ``value -> core``: the part of ``value`` that must never be output (the
        random part of a key, the password of a URL).
    HARMLESS: strings that look a little like secrets and must not be redacted.
    SECRET_NAMES / HARMLESS_NAMES: argument, key and header names on either side.
    leaked(output, value): the first 8-character piece of ``value``'s core found in output.
"""

from __future__ import annotations

import base64
import json
import random
import string

__all__ = ["HARMLESS", "HARMLESS_NAMES", "SECRETS", "SECRET_CORES", "SECRET_NAMES", "leaked"]

_rng = random.Random(0x5EC12E75)
_LOWER = string.ascii_lowercase
_UPPER = string.ascii_uppercase
_DIGITS = string.digits
_ALNUM = _LOWER + _UPPER + _DIGITS
_URLSAFE = _ALNUM + "_-"
_PASSWORD = _ALNUM + "!$%^*-_+~."
_HEX = "0123456789abcdef"


def _r(chars: str, n: int) -> str:
    """Random string of ``n`` characters with at least one lower, upper and digit if possible."""
    while True:
        s = "".join(_rng.choice(chars) for _ in range(n))
        kinds = [set(s) & set(k) for k in (_LOWER, _UPPER, _DIGITS) if set(k) & set(chars)]
        if all(kinds):
            return s


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _luhn_complete(prefix: str, length: int) -> str:
    """A card number of ``length`` digits that starts with ``prefix`` and passes Luhn."""
    body = prefix + "".join(_rng.choice(_DIGITS) for _ in range(length - len(prefix) - 1))
    for check in _DIGITS:
        digits = body + check
        total = 0
        for i, ch in enumerate(reversed(digits)):
            d = int(ch)
            if i % 2:
                d = d * 2 - 9 if d > 4 else d * 2
            total += d
        if total % 10 == 0:
            return digits
    raise AssertionError("unreachable")


def _group(digits: str, sizes: tuple[int, ...], sep: str) -> str:
    out, i = [], 0
    for size in sizes:
        out.append(digits[i : i + size])
        i += size
    return sep.join(out)


def _pem(kind: str, lines: int, end: bool = True) -> tuple[str, str]:
    body = "\n".join(base64.b64encode(_rng.randbytes(48)).decode() for _ in range(lines))
    text = f"-----BEGIN {kind}-----\n{body}\n"
    if end:
        text += f"-----END {kind}-----\n"
    return text, body


SECRETS: list[tuple[str, str]] = []
SECRET_CORES: dict[str, str] = {}


def _add(fmt: str, value: str, core: str | None = None) -> None:
    SECRETS.append((fmt, value))
    SECRET_CORES[value] = core if core is not None else value


for _ in range(3):
    _k = _r(_ALNUM, 48)
    _add("openai", "sk-" + _k, _k)
for _ in range(3):
    _k = _r(_URLSAFE, 64)
    _add("openai_project", "sk-proj-" + _k, _k)
_k = _r(_URLSAFE, 56)
_add("openai_service_account", "sk-svcacct-" + _k, _k)
for _ in range(3):
    _k = _r(_URLSAFE, 93)
    _add("anthropic", "sk-ant-api03-" + _k + "AA", _k)
for _ in range(3):
    _k = _r(_LOWER + _UPPER, 34)
    _add("huggingface", "hf_" + _k, _k)
for _ in range(3):
    _k = _r(_UPPER + "234567", 16)
    _add("aws_access_key_id", "AKIA" + _k, _k)
_k = _r(_UPPER + "234567", 16)
_add("aws_session_key_id", "ASIA" + _k, _k)
_k = _r(_ALNUM + "/+", 40)
_add("aws_secret_access_key", "aws_secret_access_key=" + _k, _k)
_k = _r(_ALNUM + "/+", 40)
_add("aws_secret_access_key", "aws_secret_access_key = " + _k, _k)
for _prefix in ("ghp_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_"):
    _k = _r(_ALNUM, 36)
    _add("github", _prefix + _k, _k)
for _ in range(2):
    _k = _r(_ALNUM, 22) + "_" + _r(_ALNUM, 59)
    _add("github_fine_grained", "github_pat_" + _k, _k)
for _ in range(2):
    _k = _r(_URLSAFE, 20)
    _add("gitlab", "glpat-" + _k, _k)
for _prefix in ("xoxb-", "xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"):
    _k = f"{_r(_DIGITS, 12)}-{_r(_DIGITS, 13)}-{_r(_ALNUM, 24)}"
    _add("slack_token", _prefix + _k, _k)
for _ in range(2):
    _k = f"T{_r(_UPPER + _DIGITS, 8)}/B{_r(_UPPER + _DIGITS, 10)}/{_r(_ALNUM, 24)}"
    _add("slack_webhook", "https://hooks.slack.com/services/" + _k, _k)
for _prefix in ("sk_live_", "sk_live_", "rk_live_", "sk_test_"):
    _k = _r(_ALNUM, 99)
    _add("stripe", _prefix + _k, _k)
_k = _r(_ALNUM, 32)
_add("stripe_webhook_secret", "whsec_" + _k, _k)
for _ in range(2):
    _k = _r(_URLSAFE, 35)
    _add("google_api_key", "AIza" + _k, _k)
for _sub in ("alice@example.com", "svc-billing", "42"):
    _h = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    _p = _b64url(json.dumps({"sub": _sub, "iat": 1716000000, "n": _r(_ALNUM, 12)}).encode())
    _s = _b64url(_rng.randbytes(32))
    _add("jwt", f"{_h}.{_p}.{_s}", f"{_p}.{_s}")
for _ in range(2):
    _k = _r(_ALNUM + "-._~+/", 40)
    _add("bearer", "Bearer " + _k, _k)
for _user in ("admin", "deploy-bot"):
    _k = base64.b64encode(f"{_user}:{_r(_PASSWORD, 18)}".encode()).decode()
    _add("basic_auth", "Basic " + _k, _k)
for _kind in ("RSA PRIVATE KEY", "OPENSSH PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY"):
    _v, _body = _pem(_kind, 12)
    _add("pem_private_key", _v, _body)
_v, _body = _pem("ENCRYPTED PRIVATE KEY", 8, end=False)
_add("pem_private_key_cut", _v, _body)
_k = _r(_PASSWORD, 20)
_add("url_credentials", f"postgres://admin:{_k}@db.internal:5432/app", _k)
_k = _r(_PASSWORD, 24)
_add("url_credentials", f"redis://:{_k}@cache:6379/0", _k)
_k = _r(_PASSWORD, 16)
_add("url_credentials", f"https://deploy:{_k}@git.example.com/team/repo.git", _k)
_k = _r(_ALNUM, 32)
_add("query_param", f"https://api.example.com/v1/items?page=2&access_token={_k}", _k)
_k = _r(_ALNUM, 40)
_add("query_param", f"https://maps.example.com/geo?api_key={_k}&q=paris", _k)
_k = _r(_PASSWORD, 14)
_add("key_value", "password=" + _k, _k)
_k = _r(_PASSWORD, 22)
_add("key_value", "DB_PASSWORD=" + _k, _k)
_k = _r(_PASSWORD, 18)
_add("json_pair", json.dumps({"user": "alice", "password": _k}), _k)
_k = _r(_ALNUM, 40)
_add("json_pair", json.dumps({"client_secret": _k, "client_id": "web-app"}), _k)
_k = _r(_ALNUM, 32)
_add("header_line", "X-Api-Key: " + _k, _k)
_k = _r(_ALNUM, 36)
_add("npm", "npm_" + _k, _k)
_k = _r(_URLSAFE, 70)
_add("pypi", "pypi-AgEIcHlwaS5vcmc" + _k, _k)
_k = f"{_r(_URLSAFE, 22)}.{_r(_URLSAFE, 43)}"
_add("sendgrid", "SG." + _k, _k)
_k = _r(_HEX, 32)
_add("shopify", "shpat_" + _k, _k)
_k = _r(_HEX, 64)
_add("digitalocean", "dop_v1_" + _k, _k)
_k = f"{_r(_DIGITS, 18)}/{_r(_URLSAFE, 68)}"
_add("discord_webhook", "https://discord.com/api/webhooks/" + _k, _k)
for _prefix, _len, _sizes, _sep in (
    ("4", 16, (4, 4, 4, 4), " "),
    ("4", 16, (16,), ""),
    ("51", 16, (4, 4, 4, 4), "-"),
    ("2221", 16, (4, 4, 4, 4), " "),
    ("37", 15, (4, 6, 5), " "),
    ("6011", 16, (4, 4, 4, 4), "-"),
):
    _v = _group(_luhn_complete(_prefix, _len), _sizes, _sep)
    _add("card_number", _v)

_FAILS_LUHN = _luhn_complete("4", 16)
_FAILS_LUHN = _FAILS_LUHN[:-1] + str((int(_FAILS_LUHN[-1]) + 1) % 10)

HARMLESS: list[str] = [
    "monkey", "author", "keyboard", "tokenizer_name", "auth_types", "key_count", "turkey",
    "The author's keyboard was sticky.", "monkey business", "skeleton key",
    "sk", "sk-learn", "ask-me-anything", "task-1234", "desk_lamp_2", "sky-high-2024",
    "550e8400-e29b-41d4-a716-446655440000", "f47ac10b-58cc-4372-a567-0e02b2c3d479",
    "3f786850e387550fdab836ed7e6dc881de23001b", "e3b0c44298fc1c149afbf4c8996fb924",
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "12345", "2024", "4111", "1234 5678", _FAILS_LUHN, "4111 1111 1111 1112",
    "1716000000123456789", "t0_ns=1716000000123456789", "0.4111111111111111",
    "2024-05-17", "2024-05-17T12:34:56.789Z", "2024-05-17 12:34:56+02:00",
    "The meeting is at 10:30 on 2024-05-17.", "+1 (555) 123-4567", "+44 20 7946 0958",
    "192.168.1.254", "v2.31.0", "3.11.7", "#ff00aa", "rgb(255, 0, 128)",
    "SGVsbG8sIFdvcmxkIQ==", "eyJhIjoxfQ==", "aGVsbG8gd29ybGQ=", "AKIA", "eyJ", "ghp", "xoxo hugs",
    "https://example.com/path?page=2&sort=desc", "https://alice@example.com/",
    "http://localhost:8080/api/v1/health", "mailto:alice@example.com",
    "https://github.com/org/repo/blob/main/README.md", "wss://stream.example.com:443/feed",
    "/usr/lib/python3.11/site-packages/requests/api.py", "C:\\Users\\alice\\Documents",
    "key=value", "key: value", "max_tokens=4096", "token_count: 42", "auth_types=basic,oauth",
    "tokenizer_name=gpt2", "sort_key=name", "primary_key=id", "session_count: 12",
    "api_version=2024-02-01", "x-request-id: 3f2a9c1e-4b5d-4e6f-8a7b-9c0d1e2f3a4b",
    "Content-Type: application/json", "model=gpt-4o-mini temperature=0.2 max_tokens=512",
    "user_id=12345&session_count=3", "author: Jane Doe", "password reset email sent",
    "Please choose a stronger password.", "Bearer token required", "the bearer of this note",
    "Basic usage of basic authentication", "hf_hub_download", "npm_config_cache",
    "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUX\n-----END CERTIFICATE-----",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC alice@laptop", "auth::login", "a:b:c",
    "<__main__.Foo object at 0x7f3b2c1d4e50>", "CamelCaseIdentifierNameHere",
    # look-alikes of secret formats (issue 10.11): words after "sk-", "eyJ" that decodes to
    # no JSON header, status words and masks after a secret name
    "sk-learn-compatible-estimator-v2", "sk-image-processing-toolkit-v3",
    "pip install sk-video-tools-2024", "sk-Learn-Pipeline-Step12", "eyJustKidding.x",
    "eyJustKidding.notAToken", "eyJuly2024Report.final", "auth: ok", "auth=false",
    "password: required", "token: none", "secret: null", "password: ********",
    "Authorization: none", '{"password": "missing", "user": "bob"}', "api_key=unset",
    "session_id: expired", "password_reset_url=https://example.com/reset",
]

SECRET_NAMES: list[str] = [
    "password", "passwd", "pwd", "db_password", "userPassword", "DB_PASSWORD2", "passphrase",
    "secret", "client_secret", "clientSecret", "AWS_SECRET_ACCESS_KEY", "secret_key",
    "token", "access_token", "refresh_token", "auth_token", "id_token", "csrf_token",
    "accessToken", "X-CSRF-Token", "github_token", "hf_token", "slack_bot_token",
    "x-amz-security-token", "access_tokens", "token_value", "session_token",
    "api_key", "apikey", "api-key", "apiKey", "APIKey", "x-api-key", "X-Api-Key",
    "OPENAI_API_KEY", "access_key", "aws_access_key_id", "private_key", "privateKey",
    "signing_key", "encryption_key", "Ocp-Apim-Subscription-Key",
    "authorization", "Authorization", "Proxy-Authorization", "HTTP_AUTHORIZATION",
    "auth", "auth_header", "basic_auth", "authorization_code",
    "cookie", "Cookie", "Set-Cookie", "cookies", "session_id", "sessionid", "sessionId",
    "PHPSESSID", "credential", "credentials", "creds", "bearer", "db_pass", "jwt",
    "X-Hub-Signature-256", "X-Amz-Signature", "X-Amz-Credential",
]

HARMLESS_NAMES: list[str] = [
    "monkey", "author", "keyboard", "tokenizer_name", "auth_types", "key_count", "keys",
    "key", "primary_key", "sort_key", "cache_key", "partition_key", "foreign_key",
    "public_key", "max_tokens", "token_count", "token_type", "tokens", "prompt_tokens",
    "completion_tokens", "total_tokens", "pad_token", "eos_token", "eos_token_id",
    "next_token", "page_token", "tokenizer", "tokenize", "session", "session_count",
    "session_name", "authors", "authority", "author_id", "authenticated", "auth_url",
    "auth_method", "auth_type", "keyring", "keyword", "keywords", "hotkey", "turkey",
    "donkey", "whiskey", "api_version", "api_url", "api_base", "base_url", "access_level",
    "access_mode", "secretary", "compass", "passage", "bypass", "signal", "design",
    "username", "user", "email", "name", "id", "model", "temperature", "prompt",
    "messages", "headers", "url", "data", "value", "sk", "desk", "task", "mask",
    # names about a secret, not holding one (issue 10.11)
    "password_reset_url", "session_id_prefix", "SESSION_COOKIE_NAME", "cookie_domain",
    "password_min_length", "POSTGRES_PASSWORD_FILE", "secret_name", "password_policy",
    "credentials_path", "api_key_prefix", "auth_token_ttl", "password_changed_at",
    "CSRF_COOKIE_SECURE", "password_strength", "access_token_url", "refresh_token_url",
    "secret_key_file", "session_id_length", "password_reset_link", "jwt_expiration",
]


def leaked(output: str, value: str) -> str | None:
    """Return the first 8-character piece of ``value``'s core that occurs in ``output``.

    Args:
        output: Anything handit produced (a preview, an exported line).
        value: A value from :data:`SECRETS`.

    Returns:
        The leaked piece, or None when no piece of the core appears.
    """
    core = SECRET_CORES[value]
    for i in range(len(core) - 7):
        piece = core[i : i + 8]
        if "\n" not in piece and piece in output:
            return piece
    return None
