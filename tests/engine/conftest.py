"""Fixtures shared by the engine tests."""
from pathlib import Path

import pytest

from tests.engine._helpers import TOY_EPOCHS, run, train_cmd, write_toy_config




@pytest.fixture(scope='session')
def toy_reference(tmp_path_factory) -> Path:
    """Work dir of an uninterrupted toy run (epoch_1..3.pth): what interrupted runs must
    reproduce, and a real Runner checkpoint for the loading tests."""
    tmp = tmp_path_factory.mktemp('toy_reference')
    cfg = write_toy_config(tmp / 'toy.py', max_epochs=TOY_EPOCHS)
    run(train_cmd(cfg, tmp / 'wd'), timeout=120)
    return tmp / 'wd'
