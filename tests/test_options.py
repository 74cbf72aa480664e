"""Command-line value types."""

import ssl

import click
import pytest

from clearly_exporter.options import Duration, KeyValue, ssl_options


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("6s", 6.0), ("500ms", 0.5), ("5m", 300.0), ("24h", 86400.0), ("1d", 86400.0)],
)
def test_durations(text, seconds):
    assert Duration().convert(text, None, None) == seconds


def test_key_values_read_json_when_they_can():
    kv = KeyValue()
    assert kv.convert("visibility_timeout=3600", None, None) == ("visibility_timeout", 3600)
    assert kv.convert("master_name=mymaster", None, None) == ("master_name", "mymaster")
    assert kv.convert('sentinel_kwargs={"password": "x"}', None, None) == (
        "sentinel_kwargs",
        {"password": "x"},
    )
    with pytest.raises(click.BadParameter):
        kv.convert("=5", None, None)


def test_ssl_constants_are_resolved():
    assert ssl_options((("cert_reqs", "CERT_REQUIRED"), ("ca_certs", "/ca.pem"))) == {
        "cert_reqs": ssl.CERT_REQUIRED,
        "ca_certs": "/ca.pem",
    }
    assert ssl_options(()) is None
