"""A retry's reason read back from the repr Celery's event carries."""

import pytest

from clearly_exporter.retries import as_logged


@pytest.mark.parametrize(
    ("exception", "logged"),
    [
        (
            "Retry(Retry(...), RuntimeError('job-480 not ready (attempt 1)'), 0.2)",
            "Retry in 0.2s: RuntimeError('job-480 not ready (attempt 1)')",
        ),
        ("Retry(ConnectionError('a, b'), 5)", "Retry in 5s: ConnectionError('a, b')"),
        ("Retry(Retry(...), None, 3)", "Retry in 3s"),
        ("Retry(Retry(...), KeyError('x'), None)", "Retry: KeyError('x')"),
        # Not the shape of a retry's repr: shown as it came.
        ("Retry('again')", "Retry('again')"),
        (
            "Retry(Retry(...), KeyError('x'), datetime.datetime(2026, 1, 1, 0, 0))",
            "Retry(Retry(...), KeyError('x'), datetime.datetime(2026, 1, 1, 0, 0))",
        ),
        ("ValueError('bad input')", "ValueError('bad input')"),
    ],
)
def test_a_retry_reads_as_celery_logs_it(exception, logged):
    assert as_logged(exception) == logged
