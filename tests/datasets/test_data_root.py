"""One setting relocates the configs' data (mmdet_ddetr/datasets/data_root.py), and a missing
dataset fails at build naming data_root and the generate command (SyntheticCocoDataset)."""
import re
import shlex

import pytest
from mmengine.config import Config

from mmdet.registry import DATASETS
from mmdet_ddetr.datasets.data_root import DATA_ROOT_ENV, data_paths, load_config
from mmdet_ddetr.datasets.synthetic import generate_synthetic_dataset
from tests.conftest import REPO

QUICKSTART = REPO / 'configs/deformable_detr/deformable-detr_r18_1xb8-quickstart_synthetic.py'
# One config per dataset base: synthetic (DDETR and SMCA model bases) and COCO.
CONFIGS = [
    QUICKSTART,
    REPO / 'configs/smca_detr/smca-detr_r18_1xb4-quickstart_synthetic.py',
    REPO / 'configs/deformable_detr/deformable-detr_r50_16xb2-50e_coco.py',
]
# Every key the issue had to override by hand, listed independently of data_paths().
PATH_KEYS = [('train_dataloader', 'dataset', 'data_root'),
             ('val_dataloader', 'dataset', 'data_root'),
             ('test_dataloader', 'dataset', 'data_root'),
             ('val_evaluator', 'ann_file'),
             ('test_evaluator', 'ann_file')]


@pytest.fixture(autouse=True)
def _no_data_root_env(monkeypatch):
    """A developer's own setting must not leak into the defaults tested here."""
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)


def _get(cfg, key):
    node = cfg
    for part in key:
        node = node[part]
    return node


def _assert_all_under(cfg, root: str):
    for key in PATH_KEYS:
        assert _get(cfg, key).startswith(f'{root}/'), ('.'.join(key), _get(cfg, key))
    # nothing anywhere still names a default location
    assert 'data/synthetic' not in cfg.pretty_text and 'data/coco' not in cfg.pretty_text


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_data_root_option_reaches_every_dataloader_and_evaluator(path, tmp_path):
    """--cfg-options data_root=X, as tools/train.py and tools/test.py (and so mim) load it.
    Failed before: the dicts kept the parse-time 'data/synthetic/'."""
    root = str(tmp_path / 'elsewhere')
    cfg = load_config(str(path), {'data_root': root, 'train_dataloader.batch_size': 3})
    _assert_all_under(cfg, root)
    assert cfg.data_root == f'{root}/'
    assert cfg.train_dataloader.batch_size == 3  # the other options still merge


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_environment_variable_relocates_for_plain_fromfile(path, tmp_path, monkeypatch):
    """What mmdet's own tools/train.py does: Config.fromfile and nothing of ours."""
    root = str(tmp_path / 'elsewhere')
    monkeypatch.setenv(DATA_ROOT_ENV, root)
    _assert_all_under(Config.fromfile(str(path)), root)


def test_default_paths_are_unchanged():
    cfg = Config.fromfile(str(QUICKSTART))
    assert cfg.data_root == 'data/synthetic/'
    assert cfg.val_evaluator.ann_file == 'data/synthetic/annotations/val.json'
    assert sorted(data_paths(cfg)) == [
        ('test_dataloader.dataset.data_root', 'data/synthetic/'),
        ('test_evaluator.ann_file', 'data/synthetic/annotations/val.json'),
        ('train_dataloader.dataset.data_root', 'data/synthetic/'),
        ('val_dataloader.dataset.data_root', 'data/synthetic/'),
        ('val_evaluator.ann_file', 'data/synthetic/annotations/val.json'),
    ]


def test_data_root_option_that_cannot_reach_a_path_names_the_key(tmp_path):
    """A config that writes its own path: an error with the key, never the old data."""
    config = tmp_path / 'own_paths.py'
    config.write_text(f"_base_ = ['{QUICKSTART}']\n"
                      "test_dataloader = dict(dataset=dict(data_root='fixed/'))\n")
    with pytest.raises(ValueError, match=r'(?s)data_root=/x does not reach.*'
                                         r"test_dataloader\.dataset\.data_root = 'fixed/'"):
        load_config(str(config), {'data_root': '/x'})


def _demo_generate_command() -> str:
    """The generator command of tools/demo.sh, its variables expanded."""
    demo = (REPO / 'tools' / 'demo.sh').read_text()
    data = re.search(r'^DATA=(\S+)$', demo, re.M).group(1)
    args = re.search(r'^GEN_ARGS=\((.*)\)$', demo, re.M).group(1).replace('"$DATA"', data)
    return 'python tools/misc/generate_synthetic_dataset.py ' + ' '.join(shlex.split(args))


def test_missing_dataset_names_data_root_and_the_demo_generate_command(tmp_path, monkeypatch):
    """Failed before: CocoDataset's bare "[Errno 2] No such file or directory:
    'data/synthetic/annotations/train.json'"."""
    monkeypatch.chdir(tmp_path)  # no data/synthetic here
    cfg = Config.fromfile(str(QUICKSTART))
    with pytest.raises(FileNotFoundError) as info:
        DATASETS.build(cfg.train_dataloader.dataset)
    message = str(info.value)
    assert 'data/synthetic/annotations/train.json does not exist' in message
    assert "data_root='data/synthetic/'" in message
    assert '--cfg-options data_root=PATH' in message and f'{DATA_ROOT_ENV}=PATH' in message
    expected = _demo_generate_command()
    assert expected.startswith('python tools/misc/generate_synthetic_dataset.py --out '
                               'data/synthetic --seed 0')
    assert f'\n  {expected}\n' in message


def test_missing_image_folder_is_named(tmp_path):
    root = tmp_path / 'ds'
    generate_synthetic_dataset(str(root), num_train=2, num_val=1, img_size=64)
    for png in (root / 'val').iterdir():
        png.unlink()
    (root / 'val').rmdir()
    cfg = load_config(str(QUICKSTART), {'data_root': str(root)})
    DATASETS.build(cfg.train_dataloader.dataset)  # train/ is complete
    with pytest.raises(FileNotFoundError, match=f'{root}/val/ does not exist'):
        DATASETS.build(cfg.val_dataloader.dataset)


def test_relocated_dataset_loads_like_coco_dataset(tmp_path):
    root = tmp_path / 'ds'
    generate_synthetic_dataset(str(root), num_train=3, num_val=1, img_size=64)
    cfg = load_config(str(QUICKSTART), {'data_root': str(root)})
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert len(dataset) == 3
    assert dataset.metainfo['classes'] == ('circle', 'square', 'triangle', 'star', 'ellipse')
    assert dataset[0]['data_samples'].img_path == f'{root}/train/000000.png'
