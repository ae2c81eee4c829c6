"""The inheritance lines of docs/configs.md, exactly as written there: `_base_` by path for this
package's configs and `mmdet::` for mmdet's work; `mmdet_ddetr::` fails (mmengine resolves
`package::` only for the OpenMMLab packages it knows)."""
import os
import re

import pytest
from mmengine.config import Config

from mmdet.registry import MODELS
from tests.conftest import REPO

DOC = REPO / 'docs' / 'configs.md'


def _doc_configs():
    """{file name: text} of the doc's python blocks whose first line names a config file."""
    blocks = re.findall(r'```python\n# my_configs/(\S+\.py)\n(.*?)```', DOC.read_text(), re.S)
    return dict(blocks)


@pytest.fixture
def user_configs(tmp_path):
    """The layout the doc assumes: a checkout called mmdet_ddetr next to the user's configs."""
    os.symlink(REPO, tmp_path / 'mmdet_ddetr')
    folder = tmp_path / 'my_configs'
    folder.mkdir()
    for name, text in _doc_configs().items():
        (folder / name).write_text(text)
    return folder


def test_doc_has_the_three_forms():
    assert set(_doc_configs()) == {'ddetr_synthetic_bs4.py', 'ddetr_r50_mmdet_schedule.py',
                                   'scope_does_not_work.py'}


def test_base_by_path(user_configs):
    cfg = Config.fromfile(str(user_configs / 'ddetr_synthetic_bs4.py'))
    assert cfg.model.type == 'DDETR' and cfg.train_dataloader.batch_size == 4
    assert cfg.train_dataloader.dataset.type == 'SyntheticCocoDataset'
    assert MODELS.build(cfg.model).num_queries == 50


def test_mmdet_scope_for_mmdets_configs(user_configs):
    cfg = Config.fromfile(str(user_configs / 'ddetr_r50_mmdet_schedule.py'))
    assert cfg.model.type == 'DDETR'
    # mmdet's schedule_1x.py: SGD, 12 epochs
    assert cfg.optim_wrapper.optimizer.type == 'SGD' and cfg.train_cfg.max_epochs == 12


def test_own_scope_is_refused_by_mmengine(user_configs):
    with pytest.raises((AssertionError, ValueError, KeyError),
                       match='does not support to load mmdet_ddetr config'):
        Config.fromfile(str(user_configs / 'scope_does_not_work.py'))
