import pytest
from studio_testing import tiny_config

from studio.models import Run


@pytest.fixture
def alices_run(alice) -> Run:
    """A run of Alice's that has logged nothing yet."""
    config = tiny_config()
    return Run.objects.create(owner=alice, name="alice's tiny run", config=config.to_dict(), total_steps=config.steps)
