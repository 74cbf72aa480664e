from collections.abc import Iterator

import pytest

from tests.cluster import Cluster, running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A live cluster shared by the tests of one module, which only read from it."""
    with running_cluster(tmp_path_factory.mktemp("cluster")) as live:
        yield live
