"""The client verbs against an exporter run with ``--web-config`` (TLS and basic auth)."""

from __future__ import annotations

import json

import bcrypt
import pytest
from click.testing import CliRunner, Result

from clearly_exporter.cli import main
from tests.support import Exporter, TlsFiles, basic_auth, make_tls_files

USER, PASSWORD = "operator", "correct horse:battery"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Exporter, TlsFiles]:
    tmp = tmp_path_factory.mktemp("guarded")
    tls = make_tls_files(tmp / "tls")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    config = tls.folder / "web.yml"
    config.write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        f"basic_auth_users:\n  {USER}: {hashed}\n"
    )
    broker = tmp / "broker"
    broker.mkdir()
    exporter = Exporter(
        f"filesystem://{broker}",
        tmp,
        ["--web-config", str(config)],
        client_headers=basic_auth(USER, PASSWORD),
        client_tls=tls.client_context(with_cert=False),
    )
    exporter.start()
    yield exporter, tls
    exporter.stop()


def stats(*args: str, env: dict | None = None) -> Result:
    return CliRunner().invoke(main, ["stats", "--json", *args], env=env)


def test_user_password_and_ca_reach_a_guarded_exporter(guarded):
    exporter, tls = guarded
    result = stats(
        "--url", exporter.url, "--ca-cert", str(tls.ca), "--user", USER, "--password", PASSWORD
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["tasks_stored"] == 0


def test_credentials_from_the_environment_and_from_the_url(guarded):
    exporter, tls = guarded
    env = {
        "CLEARLY_EXPORTER_USER": USER,
        "CLEARLY_EXPORTER_PASSWORD": PASSWORD,
        "CLEARLY_EXPORTER_CA_CERT": str(tls.ca),
    }
    assert stats("--url", exporter.url, env=env).exit_code == 0
    host = exporter.url.removeprefix("https://")
    quoted = PASSWORD.replace(":", "%3A").replace(" ", "%20")
    url = f"https://{USER}:{quoted}@{host}"
    result = stats("--url", url, "--ca-cert", str(tls.ca))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "asks for credentials: give --user and --password"),
        (("--user", USER, "--password", "wrong-secret-42"), "refused these credentials"),
        (("--user", USER), "refused a user with no password: give --password"),
    ],
)
def test_missing_or_wrong_credentials_are_one_line_errors(guarded, args, message):
    exporter, tls = guarded
    result = stats("--url", exporter.url, "--ca-cert", str(tls.ca), *args)
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert "wrong-secret-42" not in result.output


def test_a_password_in_the_url_is_never_shown(guarded):
    exporter, tls = guarded
    url = exporter.url.replace("https://", f"https://{USER}:wrong-secret-42@")
    result = stats("--url", url, "--ca-cert", str(tls.ca))
    assert result.exit_code == 1
    assert "refused these credentials" in result.output
    assert "wrong-secret-42" not in result.output


def test_an_untrusted_certificate_says_to_give_the_ca(guarded):
    exporter, _ = guarded
    result = stats("--url", exporter.url, "--user", USER, "--password", PASSWORD)
    assert result.exit_code == 1
    assert "does not trust" in result.output and "--ca-cert" in result.output
    result = stats("--url", exporter.url, "--ca-cert", "/nonexistent/ca.pem")
    assert result.exit_code == 1 and "--ca-cert '/nonexistent/ca.pem'" in result.output
