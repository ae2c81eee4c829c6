"""CheckedCocoDataset, built from the shipped synthetic dataset config: data mistakes are named
when the dataset is built (or the image loaded), not trained on."""
import copy
import json

import pytest
from mmengine.config import Config

from mmdet.registry import DATASETS
from mmdet_ddetr.datasets import checked_coco, generate_synthetic_dataset
from tests.conftest import REPO
from tests.engine._ddetr import make_tiny_dataset

DATA_CFG = REPO / 'configs/_base_/datasets/synthetic_detection.py'


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp('synthetic'))  # 8 train images


def _build(data_root, test_mode=False, ann_file='annotations/train.json', **overrides):
    """The config's train dataset (what every tool builds) on ``data_root``."""
    ds = copy.deepcopy(Config.fromfile(str(DATA_CFG)).train_dataloader.dataset)
    ds.update(data_root=str(data_root) + '/', ann_file=ann_file, test_mode=test_mode,
              **overrides)
    return DATASETS.build(ds)


def _edited_annotations(data_root, edit, name='edited.json'):
    with open(data_root / 'annotations/train.json') as f:
        coco = json.load(f)
    edit(coco)
    (data_root / 'annotations' / name).write_text(json.dumps(coco))
    return f'annotations/{name}'


def test_class_names_that_differ_from_the_annotations_fail_at_build(data_root):
    def rename(coco):
        for cat in coco['categories']:
            cat['name'] = cat['name'].capitalize()

    ann_file = _edited_annotations(data_root, rename, 'renamed.json')
    with pytest.raises(ValueError) as info:
        _build(data_root, ann_file=ann_file)
    message = str(info.value)
    assert 'renamed.json' in message
    assert "'circle'" in message and "'Circle'" in message  # both name sets


def test_dropped_boxes_are_counted_and_logged_once(data_root, monkeypatch):
    def corrupt(coco):
        anns = coco['annotations']
        anns[0]['category_id'] = 99
        anns[1]['bbox'][2] = 0
        anns[2]['bbox'][0] = float('nan')
        anns[3]['bbox'][0] = 500

    ann_file = _edited_annotations(data_root, corrupt, 'corrupt.json')
    total = len(json.loads((data_root / ann_file).read_text())['annotations'])
    logged = []
    monkeypatch.setattr(checked_coco, 'print_log', lambda msg, **kw: logged.append(msg))
    dataset = _build(data_root, ann_file=ann_file)
    dataset.full_init()  # a second call must not report again
    assert len(logged) == 1, logged
    assert f'dropped 4 of {total} boxes' in logged[0]
    for part in ('1 unknown category id (ids 99)', '1 NaN box', '1 box outside the image',
                 '1 zero/negative box'):
        assert part in logged[0]
    kept = sum(len(dataset.get_data_info(i)['instances']) for i in range(len(dataset)))
    assert kept == total - 4


def test_a_training_set_without_boxes_is_an_error(data_root):
    ann_file = _edited_annotations(data_root, lambda coco: coco.update(annotations=[]),
                                   'empty.json')
    with pytest.raises(ValueError, match='no box left to train on'):
        _build(data_root, ann_file=ann_file)
    assert len(_build(data_root, test_mode=True, ann_file=ann_file)) == 8  # evaluation: fine


@pytest.mark.parametrize('damage, problem', [
    (lambda path: path.unlink(), 'does not exist'),
    (lambda path: path.write_bytes(b''), 'is empty (0 bytes)'),
    (lambda path: path.write_bytes(b'\x89PNG\r\n\x1a\n truncated'), 'cannot be decoded'),
])
def test_an_unreadable_image_is_named(tmp_path, damage, problem):
    generate_synthetic_dataset(str(tmp_path), seed=0, num_train=2, num_val=1, img_size=64)
    dataset = _build(tmp_path)
    image = tmp_path / 'train' / '000001.png'
    damage(image)
    index = next(i for i in range(len(dataset))
                 if dataset.get_data_info(i)['img_path'] == str(image))
    with pytest.raises(checked_coco.ImageFileError) as info:
        dataset[index]
    assert str(image) in str(info.value) and problem in str(info.value)
