"""The e2e tests run as a user runs: grappler on (helpers.set_grappler) in
this process too, so that the runs they compare in process build the same
graphs as their processes."""

import pytest

from helpers import set_grappler


@pytest.fixture(scope="module", autouse=True)
def _grappler_on():
    set_grappler(True)
    yield
    set_grappler(False)
