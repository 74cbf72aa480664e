"""Broker URLs: which schemes work, what a broker is called, and the filesystem layout.

kombu's filesystem transport takes its folders as transport options; we also accept
``filesystem:///some/dir`` and lay the folders out below it, so one URL is all the
demo's workers, producer and exporter need to share.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

#: URL scheme → the ``messaging.system`` name of the broker behind it.
SCHEMES: dict[str, str] = {
    "redis": "redis",
    "rediss": "redis",
    "sentinel": "redis",
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "pyamqp": "rabbitmq",
    "filesystem": "filesystem",
    "memory": "memory",
    "sqs": "aws_sqs",
    "mongodb": "mongodb",
    "zookeeper": "zookeeper",
    "sqla": "sql",
}


#: The filesystem transport has no host; naming one spares kombu's "no hostname" warning.
FILESYSTEM = "filesystem://localhost/"


#: kombu's filesystem transport with whole-message writes (see ``fstransport``).
FILESYSTEM_TRANSPORT = "clearly_exporter.fstransport:Transport"


def transport_for(url: str) -> str | None:
    """The transport class to give kombu/Celery for a URL from ``connection_config``.

    Anything that writes to a filesystem broker (the exporter's broadcasts included)
    must write whole messages, or a worker reading half of one dies.
    """
    return FILESYSTEM_TRANSPORT if url == FILESYSTEM else None


class BrokerURLError(ValueError):
    """A broker URL that kombu would not understand, said in one line."""


def validate(url: str) -> str:
    """Return the URL's scheme, or raise ``BrokerURLError`` saying how to fix it."""
    scheme = urlsplit(url).scheme.split("+", 1)[-1].lower()
    if "://" not in url or not scheme:
        raise BrokerURLError(
            f"broker URL {redact_url(url)!r} has no scheme; "
            "use e.g. redis://localhost:6379/0 or amqp://guest:guest@localhost:5672//"
        )
    if scheme not in SCHEMES:
        known = ", ".join(sorted(SCHEMES))
        raise BrokerURLError(f"unknown broker scheme {scheme!r}; use one of: {known}")
    check_password_encoding(url)
    return scheme


def check_password_encoding(url: str, what: str = "broker URL") -> None:
    """Refuse an ``@`` after the host: a password with unencoded ``/ ? #``, which kombu
    and Celery would read in part as the port or path, and quote in their errors."""
    for part in _URLS.split(url):
        netloc = urlsplit(part).netloc
        if netloc and "@" not in netloc and "@" in part.partition("://")[2]:
            raise BrokerURLError(
                f"{what} {redact_url(url)!r} has an '@' after its host: percent-encode "
                "/ ? # in the password (%2F %3F %23)"
            )


def messaging_system(url: str) -> str:
    return SCHEMES.get(validate(url), "celery")


def connection_config(url: str, transport_options: dict | None = None) -> tuple[str, dict]:
    """The URL and transport options to give kombu/Celery for ``url``.

    ``filesystem:///dir`` becomes kombu's filesystem URL with ``dir/data`` for messages and
    ``dir/control`` for exchange bindings; explicit transport options win.
    """
    options = dict(transport_options or {})
    if validate(url) == "filesystem":
        root = urlsplit(url).path
        if root and root != "/":
            data = os.path.join(root, "data")
            control = os.path.join(root, "control")
            for folder in (data, control):
                os.makedirs(folder, exist_ok=True)
            options.setdefault("data_folder_in", data)
            options.setdefault("data_folder_out", data)
            options.setdefault("control_folder", control)
            options.setdefault("polling_interval", 0.1)
        url = FILESYSTEM
    return url, options


#: Where a list of URLs (sentinel's ``a;b``) splits: a ``;`` before another scheme.
_URLS = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.-]*://)")


def _userinfo(url: str) -> tuple[str, str, str | None, str]:
    """``(scheme, user, password, rest)`` of one URL; the last ``@`` ends the userinfo,
    so a password with unencoded reserved characters is still all of the password."""
    scheme, sep, after = url.partition("://")
    userinfo, at, rest = after.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not (sep and at and colon):
        return scheme, "", None, after
    return scheme, user, password, rest


def redact_url(url: str) -> str:
    """The URL (or ``;``-separated URLs) with every password replaced, for logs and errors."""
    out = []
    for part in _URLS.split(url):
        scheme, user, password, rest = _userinfo(part)
        out.append(part if password is None else f"{scheme}://{user}:***@{rest}")
    return ";".join(out)


def url_passwords(url: str | None) -> set[str]:
    """The passwords in a URL (or ``;``-separated URLs), as written and percent-decoded:
    libraries quote either form in their messages."""
    found: set[str] = set()
    for part in _URLS.split(url or ""):
        password = _userinfo(part)[2]
        if password:
            found.update((password, unquote(password)))
    return found
