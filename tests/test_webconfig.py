"""``--web-config``: the file (exporter-toolkit format), the TLS context it makes, and the
basic-auth checker with its memory of passed credentials."""

from __future__ import annotations

import hashlib
import ssl
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
from click.testing import CliRunner

from clearly_exporter import basicauth
from clearly_exporter.basicauth import BasicAuth, credentials
from clearly_exporter.cli import main
from clearly_exporter.webconfig import WebConfigError, load
from tests.support import TlsFiles, basic_auth, make_tls_files

#: Cost 4, the lowest: these tests count bcrypt checks, they do not need them slow.
HASH = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def config(folder: Path, text: str) -> Path:
    path = folder / "web.yml"
    path.write_text(text)
    return path


def test_full_config_makes_a_verifying_context_and_users(tls: TlsFiles, monkeypatch):
    path = config(
        tls.folder,
        "tls_server_config:\n"
        "  cert_file: server.pem\n"
        "  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n"
        "  client_ca_file: ca.pem\n"
        "  min_version: TLS13\n"
        f"basic_auth_users:\n  alice: {HASH}\n  bob: '{HASH}'\n",
    )
    monkeypatch.chdir("/")  # relative paths are the file's folder's, not the cwd's
    web = load(str(path))
    assert web.tls is not None
    assert web.tls.verify_mode == ssl.CERT_REQUIRED
    assert web.tls.minimum_version == ssl.TLSVersion.TLSv1_3
    assert web.tls.maximum_version == ssl.TLSVersion.TLSv1_3
    assert web.users == {"alice": HASH.encode(), "bob": HASH.encode()}


def test_no_tls_no_users_means_open_plain_http(tmp_path: Path):
    for text in ("", "tls_server_config:\nbasic_auth_users: {}\n"):
        web = load(str(config(tmp_path, text)))
        assert web.tls is None and not web.users


def test_tls_defaults_to_tls12_and_no_client_certificates(tls: TlsFiles):
    web = load(
        str(config(tls.folder, "tls_server_config: {cert_file: server.pem, key_file: server.key}"))
    )
    assert web.tls is not None
    assert web.tls.verify_mode == ssl.CERT_NONE
    assert web.tls.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("basic_auth_users: [\n", "invalid YAML: "),
        ("- a\n", "the file must be a mapping, not list"),
        (
            "tls_config: {}\n",
            "unknown key 'tls_config'; known: tls_server_config, basic_auth_users",
        ),
        ("rate_limit: {interval: 1s, burst: 2}\n", "rate_limit is not supported"),
        ("http_server_config: {http2: false}\n", "http_server_config is not supported"),
        ("tls_server_config: {cert: x, key: y}\n", "tls_server_config.cert is not supported"),
        ("tls_server_config: {cert_file: server.pem}\n", "needs both cert_file and key_file"),
        ("tls_server_config: {cert_file: server.pem, key_file: ''}\n", "non-empty string"),
        ("tls_server_config: [server.pem]\n", "tls_server_config must be a mapping"),
        (
            "tls_server_config: {cert_file: nope.pem, key_file: server.key}\n",
            "nope.pem with key_file",
        ),
        (
            "tls_server_config: {cert_file: server.pem, key_file: client.key}\n",
            "cannot load cert_file",
        ),
        (
            "tls_server_config: {cert_file: server.pem, key_file: server.key, "
            "client_auth_type: RequireAnyClientCert, client_ca_file: ca.pem}\n",
            "'RequireAnyClientCert' is not supported",
        ),
        (
            "tls_server_config: {cert_file: server.pem, key_file: server.key, "
            "client_ca_file: ca.pem}\n",
            "client_ca_file is set but client_auth_type is NoClientCert",
        ),
        (
            "tls_server_config: {cert_file: server.pem, key_file: server.key, "
            "client_auth_type: RequireAndVerifyClientCert}\n",
            "RequireAndVerifyClientCert needs client_ca_file",
        ),
        (
            "tls_server_config: {cert_file: server.pem, key_file: server.key, "
            "client_auth_type: VerifyClientCertIfGiven, client_ca_file: server.key}\n",
            "cannot load client_ca_file",
        ),
        (
            "tls_server_config: {cert_file: server.pem, key_file: server.key, min_version: TLS14}",
            "min_version 'TLS14' is not one of TLS10, TLS11, TLS12, TLS13",
        ),
        (
            "tls_server_config: {cert_file: server.pem, key_file: server.key, "
            "min_version: TLS13, max_version: TLS12}",
            "min_version is above max_version",
        ),
        ("basic_auth_users: alice\n", "basic_auth_users must be a mapping"),
        (f"basic_auth_users: {{'a:b': '{HASH}'}}\n", "user 'a:b' must be a non-empty string"),
        (f"basic_auth_users: {{1: '{HASH}'}}\n", "user 1 must be a non-empty string"),
        (f"basic_auth_users: {{a: '{HASH[:28]}z{HASH[29:]}'}}\n", "'a' is not a bcrypt hash"),
    ],
)
def test_bad_configs_are_one_line_errors_naming_the_file(tls: TlsFiles, text: str, message: str):
    path = config(tls.folder, text)
    with pytest.raises(WebConfigError) as caught:
        load(str(path))
    said = str(caught.value)
    assert said.startswith(f"web config {path}: ")
    assert message in said
    assert "\n" not in said


def test_a_password_instead_of_a_hash_is_refused_without_being_repeated(tmp_path: Path):
    path = config(tmp_path, "basic_auth_users:\n  alice: hunter2-plain\n")
    with pytest.raises(WebConfigError) as caught:
        load(str(path))
    assert "the password of 'alice' is not a bcrypt hash; make one with: htpasswd" in str(
        caught.value
    )
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("kind", ["missing", "folder", "binary"])
def test_unreadable_files_are_one_line_errors(tmp_path: Path, kind: str):
    path = tmp_path / "web.yml"
    if kind == "folder":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\x00basic")
    with pytest.raises(WebConfigError) as caught:
        load(str(path))
    expected = "not UTF-8 text" if kind == "binary" else "cannot read it ("
    assert expected in str(caught.value)


def test_bad_web_config_stops_the_exporter_at_start_with_status_2(tmp_path: Path):
    path = config(tmp_path, "tls_server_config:\n  cert_file: [\n")
    cmd = [sys.executable, "-m", "clearly_exporter", "run", "--broker", "redis://127.0.0.1:1"]
    result = subprocess.run(
        [*cmd, "--web-config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: Invalid value for '--web-config': web config {path}: invalid YAML: "
        "expected the node content, but found '<stream end>' (line 3)"
    ], result.stderr
    assert "Traceback" not in result.stderr


def test_backend_password_with_unencoded_slash_is_refused_unquoted():
    result = CliRunner().invoke(
        main, ["run", "--broker", "redis://127.0.0.1:1", "--backend", "redis://:PL/NTED@h:1/0"]
    )
    assert result.exit_code == 2
    assert "backend URL 'redis://:***@h:1/0' has an '@' after its host" in result.output
    assert "PL" not in result.output


def test_credentials_of_basic_headers():
    assert credentials(basic_auth("alice", "a:b c")["Authorization"]) == ("alice", "a:b c")
    assert credentials("basic  " + basic_auth("é", "")["Authorization"][6:]) == ("é", "")
    for header in [None, "", "Bearer x", "Basic", "Basic !!!", "Basic YWxpY2U=", "Basic /w=="]:
        assert credentials(header) is None, header


@pytest.fixture
def bcrypt_calls(monkeypatch) -> list[bytes]:
    """Every bcrypt check basic auth makes, by the password it checked."""
    calls: list[bytes] = []
    real = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real(password, hashed)

    monkeypatch.setattr(basicauth.bcrypt, "checkpw", counting)
    return calls


def test_a_passed_pair_is_remembered_and_costs_no_more_bcrypt(bcrypt_calls: list[bytes]):
    auth = BasicAuth({"alice": HASH.encode()})
    assert not auth.remembered("alice", "right")
    assert auth.verify("alice", "right")
    for _ in range(50):  # a scraper coming every second, for a minute
        assert auth.remembered("alice", "right")
    assert bcrypt_calls == [b"right"]
    assert not auth.remembered("alice", "right ")
    assert not auth.remembered("alic", "eright")


def test_failures_are_never_remembered_and_unknown_users_cost_a_check(bcrypt_calls: list[bytes]):
    auth = BasicAuth({"alice": HASH.encode()})
    for _ in range(3):
        assert not auth.verify("alice", "wrong")
        assert not auth.verify("mallory", "right"), "another user's password never passes"
        assert not auth.remembered("alice", "wrong")
        assert not auth.remembered("mallory", "right")
    assert bcrypt_calls == [b"wrong", b"right"] * 3
    assert not auth.verify("alice", "x" * 100), "over 72 bytes: refused, not truncated"


def test_memory_is_bounded_and_holds_no_password():
    users = {f"u{i}": bcrypt.hashpw(f"pw-{i}".encode(), bcrypt.gensalt(4)) for i in range(3)}
    auth = BasicAuth(users, remembered=2)
    for i in range(3):
        assert auth.verify(f"u{i}", f"pw-{i}")
    assert not auth.remembered("u0", "pw-0"), "the least recently used pair was forgotten"
    assert auth.remembered("u1", "pw-1") and auth.remembered("u2", "pw-2")
    state = repr(vars(auth)).encode()
    for i in range(3):
        plain = f"u{i}:pw-{i}".encode()
        assert b"pw-" not in state
        assert hashlib.sha256(plain).hexdigest().encode() not in state
        assert repr(hashlib.sha256(plain).digest()).encode()[2:-1] not in state


def test_the_documented_example_loads(tls: TlsFiles, tmp_path: Path):
    doc = (Path(__file__).parents[1] / "docs" / "production.md").read_text()
    example = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    for documented, made in [
        ("server.crt", tls.server_cert),
        ("server.key", tls.server_key),
        ("clients-ca.crt", tls.ca),
    ]:
        (tmp_path / documented).write_bytes(made.read_bytes())
    web = load(str(config(tmp_path, example)))
    assert web.tls is not None and web.tls.verify_mode == ssl.CERT_REQUIRED
    auth = BasicAuth(web.users)
    assert auth.verify("prometheus", "change me")
