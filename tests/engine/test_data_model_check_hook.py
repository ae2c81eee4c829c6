"""DataModelCheckHook (in default_runtime's default_hooks): a schedule without iterations and a
head with fewer classes than the data fail before iteration 1, naming the config key."""
import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from tests.conftest import REPO
from tests.engine._ddetr import make_tiny_dataset

QUICKSTART = REPO / 'configs/deformable_detr/deformable-detr_r18_1xb8-quickstart_synthetic.py'


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp('synthetic'))


def _runner(data_root, work_dir, train_cfg, num_classes=5) -> Runner:
    """The quickstart config (with its default hooks), shrunk, on ``data_root``."""
    cfg = Config.fromfile(str(QUICKSTART))
    cfg.work_dir = str(work_dir)
    cfg.model.encoder.num_layers = 1
    cfg.model.decoder.num_layers = 1
    cfg.model.num_queries = 5
    cfg.model.bbox_head.num_classes = num_classes
    cfg.train_dataloader.update(batch_size=2, num_workers=0, persistent_workers=False)
    cfg.train_dataloader.dataset.data_root = f'{data_root}/'
    cfg.train_cfg = dict(val_interval=100, **train_cfg)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.param_scheduler = []
    return Runner.from_cfg(cfg)


def _trained_iterations(runner):
    """Run ``runner.train()``; the iterations it ran, or the error it raised."""
    try:
        runner.train()
    except ValueError as exc:
        return exc
    return runner.iter


@pytest.mark.parametrize('train_cfg, key', [
    (dict(type='EpochBasedTrainLoop', max_epochs=0), 'train_cfg.max_epochs=0'),
    (dict(type='IterBasedTrainLoop', max_iters=-1), 'train_cfg.max_iters=-1'),
])
def test_a_schedule_without_iterations_is_an_error(data_root, tmp_path, train_cfg, key):
    runner = _runner(data_root, tmp_path, train_cfg)
    result = _trained_iterations(runner)
    assert isinstance(result, ValueError), f'trained {result} iterations without an error'
    assert key in str(result)


def test_fewer_class_logits_than_dataset_classes_is_an_error(data_root, tmp_path):
    # the synthetic data has 5 classes
    runner = _runner(data_root, tmp_path, dict(type='EpochBasedTrainLoop', max_epochs=1),
                     num_classes=3)
    result = _trained_iterations(runner)
    assert isinstance(result, ValueError), f'trained {result} iterations without an error'
    assert 'model.bbox_head.num_classes=3' in str(result) and '5 classes' in str(result)
    assert runner.iter == 0
