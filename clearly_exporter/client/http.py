"""The exporter's ``/api`` from the client's side: requests, answers, errors a user can act on.

Standard library only (``urllib``), so the client adds nothing to install. Every
failure becomes a ``ClientError`` whose message is one line saying what to do.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from clearly_exporter.client.sse import events

DEFAULT_URL = "http://localhost:9808"
#: OpenSSL's reason for a TLS handshake answered in plain HTTP (an https URL for an
#: exporter without TLS): the first before OpenSSL 3.2, the second since.
PLAIN_HTTP_ANSWER = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE"})
#: Seconds without a byte after which a stream is given up (the server sends a
#: keep-alive every 15 s).
STREAM_TIMEOUT = 60.0


class ClientError(Exception):
    """Something the user can fix, said in one line."""


@dataclass(frozen=True)
class Credentials:
    """How to reach an exporter run with ``--web-config``: basic auth and the CA to trust."""

    user: str | None = None
    password: str | None = None
    ca_cert: str | None = None


class ExporterApi:
    """The API of the exporter at ``url`` (``http://host:port``, optionally with a path).

    Credentials come from ``credentials`` or from the URL (``https://user:pass@host``);
    they are taken out of the URL so no message ever shows them.
    """

    def __init__(
        self, url: str = DEFAULT_URL, timeout: float = 30.0, credentials: Credentials | None = None
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"--url {url!r} is not an http(s) URL; e.g. {DEFAULT_URL}")
        given = credentials or Credentials()
        user = given.user or urllib.parse.unquote(parts.username or "") or None
        password = given.password or urllib.parse.unquote(parts.password or "")
        netloc = parts.netloc.rpartition("@")[2]
        self.url = urllib.parse.urlunsplit(parts._replace(netloc=netloc)).rstrip("/")
        self.timeout = timeout
        #: Whether the exporter's task view completes values Celery cut, as its last
        #: stream or list said.
        self.completes_values = False
        self._headers = {"Accept": "*/*"}
        #: A user without a password is most often a forgotten ``--password``.
        self._no_password = user is not None and not password
        if user is not None:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"
        self._context = self._tls(given.ca_cert) if parts.scheme == "https" else None

    @staticmethod
    def _tls(ca_cert: str | None) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cafile=ca_cert)
        except (OSError, ssl.SSLError) as exc:
            raise ClientError(f"--ca-cert {ca_cert!r} is not a readable PEM file: {exc}") from None

    def tasks(
        self,
        pattern: str | None = None,
        negate: bool = False,
        state: str | None = None,
        limit: int | None = None,
        reverse: bool = True,
    ) -> list[dict[str, Any]]:
        query = {"pattern": pattern, "negate": negate, "state": state, "limit": limit}
        answer = self._get("/api/tasks", reverse=reverse, **query)
        self.completes_values = bool(answer.get("completes_values"))
        return answer["tasks"]

    def task(self, uuid: str, timeout: float | None = None) -> dict[str, Any]:
        path = "/api/tasks/" + urllib.parse.quote(uuid, safe="")
        return self._request(path, {}, timeout=timeout)

    def workers(
        self, pattern: str | None = None, negate: bool = False, stats: bool = False
    ) -> list[dict[str, Any]]:
        return self._get("/api/workers", pattern=pattern, negate=negate, stats=stats)["workers"]

    def stats(self) -> dict[str, Any]:
        return self._get("/api/stats")

    def seen_tasks(self) -> list[str]:
        return self._get("/api/seen-tasks")["tasks"]

    def reset(self) -> dict[str, int]:
        return self._request("/api/reset", {}, method="POST")

    def stream(
        self,
        tasks: str | None = None,
        negate_tasks: bool = False,
        workers: str | None = None,
        negate_workers: bool = False,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Live ``(event, data)`` pairs, ``task`` or ``worker``, until the stream ends.

        The exporter's ``hello`` is checked and not passed on; its ``end`` (a client too
        slow, the exporter stopping) is raised as a ``ClientError`` with its reason.
        """
        query = {
            "tasks": tasks,
            "negate_tasks": negate_tasks,
            "workers": workers,
            "negate_workers": negate_workers,
        }
        response = self._open("/api/stream", query, timeout=STREAM_TIMEOUT)
        with response:
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                raise self._not_exporter("/api/stream", response.status)
            try:
                received = events(response)
                name, hello = next(received, ("", ""))
                if name != "hello":
                    raise self._not_exporter("/api/stream", response.status)
                self.completes_values = bool(json.loads(hello).get("completes_values"))
                for name, data in received:
                    if name == "end":
                        reason = json.loads(data)["reason"]
                        raise ClientError(f"the exporter ended the stream: {reason}")
                    yield name, json.loads(data)
            except TimeoutError:
                raise ClientError(
                    f"the exporter at {self.url} went silent for {STREAM_TIMEOUT:.0f}s"
                ) from None
            except (OSError, ValueError, http.client.HTTPException) as exc:
                raise ClientError(f"lost the stream from {self.url}: {exc!r}") from None
        raise ClientError(f"the exporter at {self.url} closed the stream")

    def _get(self, path: str, **query: Any) -> Any:
        return self._request(path, query)

    def _request(
        self, path: str, query: dict[str, Any], method: str = "GET", timeout: float | None = None
    ) -> Any:
        response = self._open(path, query, method=method, timeout=timeout)
        with response:
            try:
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise ClientError(f"lost the answer from {self.url}: {exc!r}") from None
            status = response.status
        try:
            return json.loads(body)
        except ValueError:
            raise self._not_exporter(path, status) from None

    def _open(
        self, path: str, query: dict[str, Any], method: str = "GET", timeout: float | None = None
    ):
        params = {
            key: ("true" if value else "false") if isinstance(value, bool) else str(value)
            for key, value in query.items()
            if value is not None
        }
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        request = urllib.request.Request(url, method=method, headers=self._headers)
        try:
            return urllib.request.urlopen(
                request, timeout=timeout or self.timeout, context=self._context
            )
        except urllib.error.HTTPError as exc:
            raise self._http_error(path, exc) from None
        except urllib.error.URLError as exc:
            raise self._unreachable(exc.reason) from None
        except TimeoutError:
            raise ClientError(
                f"the exporter at {self.url} did not answer within {self.timeout:.0f}s"
            ) from None
        except (OSError, ValueError) as exc:
            raise self._unreachable(exc) from None

    def _http_error(self, path: str, exc: urllib.error.HTTPError) -> ClientError:
        if exc.code == 401:
            if self._no_password:
                return ClientError(
                    f"the exporter at {self.url} refused a user with no password: give "
                    "--password (or CLEARLY_EXPORTER_PASSWORD)"
                )
            if "Authorization" in self._headers:
                return ClientError(f"the exporter at {self.url} refused these credentials")
            return ClientError(
                f"the exporter at {self.url} asks for credentials: give --user and "
                "--password (or CLEARLY_EXPORTER_USER and CLEARLY_EXPORTER_PASSWORD)"
            )
        if exc.code == 404 and not path.startswith("/api/tasks/"):
            # Only a task can be unknown to the API: a path it lacks is a wrong --url.
            return self._not_exporter(path, exc.code)
        try:
            message = json.loads(exc.read())["error"]
        except (ValueError, KeyError, TypeError, OSError):
            return self._not_exporter(path, exc.code)
        return ClientError(str(message))

    def _not_exporter(self, path: str, status: int) -> ClientError:
        base = urllib.parse.urlsplit(self.url)
        hint = "check --url"
        if base.path not in ("", "/"):
            hint += f", without a path unless a proxy adds one: {base.scheme}://{base.netloc}"
        return ClientError(
            f"no clearly-exporter API at {self.url} (HTTP {status} on {path}); {hint}"
        )

    def _unreachable(self, reason: object) -> ClientError:
        if isinstance(reason, ssl.SSLCertVerificationError):
            return ClientError(
                f"the exporter at {self.url} has a certificate this client does not trust "
                f"({reason.verify_message}); give --ca-cert with the CA that signed it"
            )
        if isinstance(reason, ssl.SSLError) and reason.reason in PLAIN_HTTP_ANSWER:
            plain = self.url.replace("https://", "http://", 1)
            return ClientError(
                f"the exporter at {self.url} does not speak TLS (no --web-config with TLS); "
                f"use {plain}"
            )
        if isinstance(reason, socket.gaierror):
            why = "unknown host"
        elif isinstance(reason, ConnectionRefusedError):
            why = "connection refused"
        elif isinstance(reason, TimeoutError):
            why = "timed out"
        else:
            why = str(reason)
        return ClientError(
            f"cannot reach the exporter at {self.url} ({why}); is it running? "
            "set --url or CLEARLY_EXPORTER_URL"
        )
