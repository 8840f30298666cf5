import os

import pytest

from trainers import make_trainer

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def trainer_factory():
    return make_trainer
