"""``--web-config``: TLS and basic authentication of the HTTP server, read from a file in
the Prometheus exporter-toolkit's format, so one file can serve all of a site's exporters.

Only the part of that format this server honours is accepted: the certificate and key,
client certificates verified against a CA, TLS versions, and users with bcrypt hashes.
Any other key is an error rather than ignored: a security setting that is read but not
applied would look applied. Relative paths are read from the file's folder, as the
toolkit does. The file is read once, at start-up.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
#: The toolkit's client_auth_type values that Python's ssl can enforce.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TOP_KEYS = ("tls_server_config", "basic_auth_users")
TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_ca_file",
    "client_auth_type",
    "min_version",
    "max_version",
)
#: Keys of the toolkit's format this server does not implement.
UNSUPPORTED = {
    "http_server_config",
    "rate_limit",
    "tls_server_config.cert",
    "tls_server_config.key",
    "tls_server_config.client_ca",
    "tls_server_config.client_allowed_sans",
    "tls_server_config.cipher_suites",
    "tls_server_config.prefer_server_cipher_suites",
    "tls_server_config.curve_preferences",
}
BCRYPT_HASH = re.compile(r"^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$")
HASH_HOWTO = "make one with: htpasswd -nBC 10 '' | tr -d ':\\n'"


class WebConfigError(ValueError):
    """A web config that cannot be used, said in one line."""


@dataclass(frozen=True)
class WebConfig:
    #: None: plain HTTP.
    tls: ssl.SSLContext | None = None
    #: User name → bcrypt hash; empty: no authentication.
    users: Mapping[str, bytes] = field(default_factory=dict)


def load(path: str) -> WebConfig:
    """Read and check the file; every problem is a ``WebConfigError`` naming the file."""
    try:
        return _parse(Path(path))
    except WebConfigError as exc:
        raise WebConfigError(f"web config {path}: {exc}") from None


def _parse(path: Path) -> WebConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise WebConfigError(f"cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise WebConfigError("not UTF-8 text") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise WebConfigError(f"invalid YAML: {_yaml_problem(exc)}") from None
    data = _mapping(data, "the file")
    _check_keys(data, TOP_KEYS, "")
    tls = _mapping(data.get("tls_server_config"), "tls_server_config")
    users = _mapping(data.get("basic_auth_users"), "basic_auth_users")
    return WebConfig(tls=_tls_context(tls, path.parent), users=_users(users))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{problem} (line {mark.line + 1})" if mark is not None else problem


def _mapping(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{what} must be a mapping, not {type(value).__name__}")
    return value


def _check_keys(section: dict, known: tuple[str, ...], prefix: str) -> None:
    for key in section:
        name = f"{prefix}{key}"
        if name in UNSUPPORTED:
            raise WebConfigError(f"{name} is not supported by clearly-exporter")
        if key not in known:
            raise WebConfigError(f"unknown key {name!r}; known: {', '.join(known)}")


def _string(section: dict, key: str, default: str | None = None) -> str | None:
    value = section.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise WebConfigError(f"tls_server_config.{key} must be a non-empty string")
    return value


def _tls_context(section: dict, base: Path) -> ssl.SSLContext | None:
    _check_keys(section, TLS_KEYS, "tls_server_config.")
    if not section:
        return None
    cert, key = _string(section, "cert_file"), _string(section, "key_file")
    if cert is None or key is None:
        raise WebConfigError("tls_server_config needs both cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _version(section, "min_version", "TLS12")
    context.maximum_version = _version(section, "max_version", "TLS13")
    if context.minimum_version > context.maximum_version:
        raise WebConfigError("tls_server_config.min_version is above max_version")
    cert_path, key_path = base / cert, base / key
    try:
        context.load_cert_chain(cert_path, key_path)
    except OSError as exc:
        raise WebConfigError(
            f"cannot load cert_file {cert_path} with key_file {key_path} ({_why(exc)})"
        ) from None
    _client_auth(context, section, base)
    return context


def _version(section: dict, key: str, default: str) -> ssl.TLSVersion:
    name = _string(section, key, default)
    if name not in TLS_VERSIONS:
        known = ", ".join(TLS_VERSIONS)
        raise WebConfigError(f"tls_server_config.{key} {name!r} is not one of {known}")
    return TLS_VERSIONS[name]


def _client_auth(context: ssl.SSLContext, section: dict, base: Path) -> None:
    """Client certificates: verified against ``client_ca_file``, or not asked for."""
    kind = _string(section, "client_auth_type", "NoClientCert")
    ca = _string(section, "client_ca_file")
    if kind not in CLIENT_AUTH:
        raise WebConfigError(
            f"tls_server_config.client_auth_type {kind!r} is not supported; use one of "
            f"{', '.join(CLIENT_AUTH)} (certificates are always verified)"
        )
    mode = CLIENT_AUTH[kind]
    if mode == ssl.CERT_NONE:
        if ca is not None:
            raise WebConfigError(
                "client_ca_file is set but client_auth_type is NoClientCert; "
                "set client_auth_type: RequireAndVerifyClientCert"
            )
        return
    if ca is None:
        raise WebConfigError(f"client_auth_type {kind} needs client_ca_file")
    try:
        context.load_verify_locations(cafile=base / ca)
    except OSError as exc:
        raise WebConfigError(f"cannot load client_ca_file {base / ca} ({_why(exc)})") from None
    context.verify_mode = mode


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _users(section: dict) -> dict[str, bytes]:
    users = {}
    for user, hashed in section.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise WebConfigError(
                f"basic_auth_users: user {user!r} must be a non-empty string without ':'"
            )
        if not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed) or not _salt_ok(hashed):
            raise WebConfigError(
                f"basic_auth_users: the password of {user!r} is not a bcrypt hash; {HASH_HOWTO}"
            )
        users[user] = hashed.encode()
    return users


def _salt_ok(hashed: str) -> bool:
    """bcrypt refuses some salts of the right shape: ask it now, at the lowest cost, rather
    than refuse every login later."""
    try:
        bcrypt.hashpw(b"", f"{hashed[:4]}04${hashed[7:29]}".encode())
    except ValueError:
        return False
    return True
