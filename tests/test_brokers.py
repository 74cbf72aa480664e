"""Broker URLs: validation, the filesystem layout, redaction."""

import pytest

from clearly_exporter.brokers import (
    BrokerURLError,
    connection_config,
    messaging_system,
    redact_url,
)


@pytest.mark.parametrize(
    ("url", "system"),
    [
        ("redis://localhost:6379/0", "redis"),
        ("rediss://h:6380/0", "redis"),
        ("sentinel://h:26379", "redis"),
        ("amqp://guest:guest@h//", "rabbitmq"),
        ("filesystem://", "filesystem"),
    ],
)
def test_known_schemes(url, system):
    assert messaging_system(url) == system


@pytest.mark.parametrize("url", ["http://x", "localhost:6379", ""])
def test_unknown_schemes_are_refused(url):
    with pytest.raises(BrokerURLError):
        messaging_system(url)


def test_filesystem_dir_url_lays_out_folders(tmp_path):
    url, options = connection_config(f"filesystem://{tmp_path}", {"polling_interval": 1})
    assert url == "filesystem://localhost/"
    assert options["data_folder_in"] == options["data_folder_out"] == str(tmp_path / "data")
    assert options["control_folder"] == str(tmp_path / "control")
    assert options["polling_interval"] == 1, "explicit transport options win"
    assert (tmp_path / "data").is_dir() and (tmp_path / "control").is_dir()


def test_other_urls_pass_through():
    assert connection_config("redis://h/1", {"a": 1}) == ("redis://h/1", {"a": 1})


def test_passwords_are_redacted():
    assert redact_url("amqp://user:s3cret@host:5672//") == "amqp://user:***@host:5672//"
    assert redact_url("redis://host/0") == "redis://host/0"
