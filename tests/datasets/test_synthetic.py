"""Tests of the synthetic shapes dataset generator (CPU, a few seconds)."""
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest

from mmdet_ddetr.datasets import synthetic
from mmdet_ddetr.datasets.synthetic import (CLASSES, SyntheticConfig,
                                            generate_synthetic_dataset, is_complete,
                                            render_image)

SMALL = dict(seed=3, num_train=40, num_val=12, img_size=96)


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    """One small dataset shared by the read-only tests."""
    root = str(tmp_path_factory.mktemp('synthetic'))
    generate_synthetic_dataset(root, **SMALL)
    return root


def _all_files(root):
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = osp.join(dirpath, name)
            with open(path, 'rb') as f:
                out[osp.relpath(path, root)] = f.read()
    return out


def test_render_is_deterministic_by_seed():
    cfg = SyntheticConfig(**SMALL)
    img_a, objs_a = render_image(cfg, 'train', 5)
    img_b, objs_b = render_image(cfg, 'train', 5)
    assert np.array_equal(img_a, img_b) and objs_a == objs_b
    other = SyntheticConfig(**dict(SMALL, seed=4))
    img_c, _ = render_image(other, 'train', 5)
    assert not np.array_equal(img_a, img_c)
    # train and val use independent streams
    img_v, _ = render_image(cfg, 'val', 5)
    assert not np.array_equal(img_a, img_v)


def test_image_does_not_depend_on_dataset_length():
    short = SyntheticConfig(**dict(SMALL, num_train=3))
    img_a, objs_a = render_image(short, 'train', 2)
    img_b, objs_b = render_image(SyntheticConfig(**SMALL), 'train', 2)
    assert np.array_equal(img_a, img_b) and objs_a == objs_b


def test_same_seed_gives_identical_files(dataset, tmp_path):
    again = str(tmp_path / 'again')
    generate_synthetic_dataset(again, **SMALL)
    assert _all_files(dataset) == _all_files(again)


def test_coco_validity(dataset):
    from pycocotools.coco import COCO
    for split, n_img in (('train', SMALL['num_train']), ('val', SMALL['num_val'])):
        coco = COCO(osp.join(dataset, 'annotations', f'{split}.json'))
        cats = coco.loadCats(coco.getCatIds())
        assert [c['id'] for c in cats] == list(range(1, len(CLASSES) + 1))
        assert [c['name'] for c in cats] == list(CLASSES)
        assert sorted(coco.getImgIds()) == list(range(1, n_img + 1))
        ann_ids = coco.getAnnIds()
        assert len(ann_ids) == len(set(ann_ids)) >= n_img  # at least one object per image
        for img_info in coco.loadImgs(coco.getImgIds()):
            img = cv2.imread(osp.join(dataset, split, img_info['file_name']))
            assert img is not None
            assert img.shape == (img_info['height'], img_info['width'], 3)
            assert len(coco.getAnnIds(imgIds=img_info['id'])) >= 1
        for ann in coco.loadAnns(ann_ids):
            assert ann['iscrowd'] == 0
            assert ann['category_id'] in coco.getCatIds()
            x, y, w, h = ann['bbox']
            assert all(isinstance(v, int) for v in ann['bbox'])
            assert 0 < ann['area'] <= w * h


def test_boxes_inside_image(dataset):
    size = SMALL['img_size']
    for split in ('train', 'val'):
        with open(osp.join(dataset, 'annotations', f'{split}.json')) as f:
            anns = json.load(f)['annotations']
        boxes = np.array([a['bbox'] for a in anns], dtype=np.float64)
        assert (boxes[:, :2] >= 0).all()
        assert (boxes[:, 2:] > 0).all()
        assert (boxes[:, 0] + boxes[:, 2] <= size).all()
        assert (boxes[:, 1] + boxes[:, 3] <= size).all()


def test_box_is_tight_around_visible_object():
    """The box must hug painted pixels: its border rows/columns differ from the background."""
    cfg = SyntheticConfig(seed=0, num_train=1, num_val=1, img_size=128, max_objects=1,
                          min_rel_size=0.3)
    _, objs = render_image(cfg, 'train', 0)
    assert len(objs) == 1
    x, y, w, h = objs[0]['bbox']
    # A log-uniform extent in [0.3, 0.5] * 128 px; the visible outline is a bit smaller for
    # triangles/stars/ellipses than the circumscribed extent, never larger.
    assert 0.1 * 128 <= max(w, h) <= 0.5 * 128 + 2


def test_class_coverage(dataset):
    for split in ('train', 'val'):
        with open(osp.join(dataset, 'annotations', f'{split}.json')) as f:
            anns = json.load(f)['annotations']
        assert {a['category_id'] for a in anns} == set(range(1, len(CLASSES) + 1))


def test_size_spread(dataset):
    with open(osp.join(dataset, 'annotations', 'train.json')) as f:
        anns = json.load(f)['annotations']
    extent = np.array([max(a['bbox'][2:]) for a in anns]) / SMALL['img_size']
    # Log-uniform in [0.1, 0.5]: both ends of the range are populated.
    assert extent.min() < 0.15
    assert extent.max() > 0.35
    assert 0.15 < np.median(extent) < 0.35


def test_occlusion_present_but_bounded():
    cfg = SyntheticConfig(seed=1, num_train=30, num_val=1, img_size=128, min_objects=4,
                          max_objects=6)
    overlapping = 0
    for i in range(cfg.num_train):
        _, objs = render_image(cfg, 'train', i)
        boxes = [o['bbox'] for o in objs]
        for a in range(len(boxes)):
            for b in range(a + 1, len(boxes)):
                xa, ya, wa, ha = boxes[a]
                xb, yb, wb, hb = boxes[b]
                if min(xa + wa, xb + wb) > max(xa, xb) and min(ya + ha, yb + hb) > max(ya, yb):
                    overlapping += 1
    assert overlapping > 0


def test_regeneration_is_a_noop(tmp_path):
    root = str(tmp_path / 'ds')
    first = generate_synthetic_dataset(root, **SMALL)
    assert first['generated'] is True
    assert is_complete(root, SyntheticConfig(**SMALL))
    mtimes = {p: os.stat(osp.join(root, p)).st_mtime_ns for p in _all_files(root)}
    second = generate_synthetic_dataset(root, **SMALL)
    assert second['generated'] is False
    assert {p: os.stat(osp.join(root, p)).st_mtime_ns for p in _all_files(root)} == mtimes
    # Different parameters regenerate, and stale images of the larger dataset are removed.
    third = generate_synthetic_dataset(root, **dict(SMALL, num_train=10))
    assert third['generated'] is True
    assert len(os.listdir(osp.join(root, 'train'))) == 10
    # A missing image makes the dataset incomplete again.
    os.remove(osp.join(root, 'val', '000000.png'))
    assert not is_complete(root, SyntheticConfig(**dict(SMALL, num_train=10)))
    assert generate_synthetic_dataset(root, **dict(SMALL, num_train=10))['generated'] is True
    # no temporary files left behind
    assert not [p for p in _all_files(root) if p.endswith('.tmp')]


def test_interrupted_generation_is_not_complete(tmp_path, monkeypatch):
    root = str(tmp_path / 'ds')
    calls = {'n': 0}
    real_encode = cv2.imencode

    def failing_encode(ext, img):
        calls['n'] += 1
        if calls['n'] > 5:
            raise KeyboardInterrupt('simulated interruption')
        return real_encode(ext, img)

    monkeypatch.setattr(synthetic.cv2, 'imencode', failing_encode)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(root, **SMALL)
    monkeypatch.undo()
    assert not osp.exists(osp.join(root, 'manifest.json'))
    assert not is_complete(root, SyntheticConfig(**SMALL))
    assert not [p for p in _all_files(root) if p.endswith('.tmp')]
    # the images written before the interruption are whole PNGs
    for name in os.listdir(osp.join(root, 'train')):
        assert cv2.imread(osp.join(root, 'train', name)) is not None
    assert generate_synthetic_dataset(root, **SMALL)['generated'] is True


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = str(tmp_path / 'a.json')
    synthetic._write_json(path, {'ok': 1})

    class Boom:
        pass

    with pytest.raises(TypeError):
        synthetic._write_json(path, {'bad': Boom()})  # not JSON serialisable
    with open(path) as f:
        assert json.load(f) == {'ok': 1}
    assert os.listdir(tmp_path) == ['a.json']


@pytest.mark.parametrize('kwargs', [
    dict(num_train=0),
    dict(img_size=16),
    dict(min_objects=3, max_objects=2),
    dict(min_rel_size=0.6, max_rel_size=0.5),
    dict(min_visible=0.0),
])
def test_invalid_parameters(tmp_path, kwargs):
    with pytest.raises(ValueError):
        generate_synthetic_dataset(str(tmp_path / 'x'), **kwargs)
    assert not osp.exists(tmp_path / 'x')


def test_a_folder_the_generator_did_not_create_is_refused_untouched(tmp_path):
    """Today's generator deleted the user's digit-named images and replaced the annotations."""
    root = tmp_path / 'my_data'
    (root / 'train').mkdir(parents=True)
    (root / 'annotations').mkdir()
    (root / 'train' / '000123.png').write_bytes(b'my image')
    (root / 'annotations' / 'train.json').write_text('{"mine": true}')
    before = _all_files(str(root))
    with pytest.raises(synthetic.ForeignFolderError, match=synthetic.MARKER_NAME):
        generate_synthetic_dataset(str(root), **SMALL)
    assert _all_files(str(root)) == before


def test_own_folders_are_rewritten(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert generate_synthetic_dataset(str(empty), **SMALL)['generated'] is True
    assert (empty / synthetic.MARKER_NAME).is_file()
    # the generator's own folder (marker) and a dataset written before the marker existed
    # (manifest naming the generator) are regenerated with other parameters
    assert generate_synthetic_dataset(str(empty), **dict(SMALL, seed=4))['generated'] is True
    (empty / synthetic.MARKER_NAME).unlink()
    assert generate_synthetic_dataset(str(empty), **dict(SMALL, seed=5))['generated'] is True
