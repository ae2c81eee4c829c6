"""Every shipped config parses and builds its model (no weights are downloaded: building
never calls init_weights)."""
from pathlib import Path

import pytest
from mmengine.config import Config

from mmdet.registry import DATASETS, MODELS
from tests.conftest import REPO

CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)


def test_there_are_configs():
    assert len(CONFIGS) >= 6


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: str(p.relative_to(REPO / 'configs')))
def test_config_builds_model(path: Path):
    cfg = Config.fromfile(str(path))
    assert cfg.get('custom_imports', {}).get('imports') == ['mmdet_ddetr'] or \
        'mmdet_ddetr' in str(cfg.get('custom_imports'))
    model = MODELS.build(cfg.model)
    assert type(model).__name__ == cfg.model.type
    # the head predicts exactly the dataset's classes
    dataset = cfg.train_dataloader.dataset
    classes = (dataset.get('metainfo') or {}).get('classes') or \
        DATASETS.get(dataset.type).METAINFO['classes']
    assert model.bbox_head.num_classes == len(classes)
    # the training recipe is complete enough for a Runner
    for key in ('optim_wrapper', 'train_cfg', 'train_dataloader', 'val_evaluator'):
        assert key in cfg, f'{path.name} lacks {key}'
