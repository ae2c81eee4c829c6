"""tools/misc/check_dataset.py: every image decoded and every annotation checked up front."""
import json

from mmdet_ddetr.datasets import generate_synthetic_dataset
from tests.conftest import REPO
from tests.tool_helpers import load_tool

QUICKSTART = REPO / 'configs/deformable_detr/deformable-detr_r18_1xb8-quickstart_synthetic.py'


def _tool():
    return load_tool('tools/misc/check_dataset.py')


def _config(tmp_path, data_root):
    path = tmp_path / 'cfg.py'
    path.write_text(f"_base_ = ['{QUICKSTART}']\n"
                    f"train_dataloader = dict(dataset=dict(data_root='{data_root}/'))\n"
                    f"val_dataloader = dict(dataset=dict(data_root='{data_root}/'))\n"
                    'test_dataloader = val_dataloader\n')
    return str(path)


def test_reports_unreadable_images_and_dropped_boxes(tmp_path, capsys):
    data = tmp_path / 'data'
    generate_synthetic_dataset(str(data), seed=0, num_train=3, num_val=2, img_size=64)
    cfg = _config(tmp_path, data)
    assert _tool().main([cfg]) == 0
    assert 'check_dataset: ok' in capsys.readouterr().out

    (data / 'train' / '000001.png').write_bytes(b'')
    (data / 'val' / '000000.png').unlink()
    ann_file = data / 'annotations' / 'train.json'
    coco = json.loads(ann_file.read_text())
    coco['annotations'][0]['category_id'] = 42
    ann_file.write_text(json.dumps(coco))
    assert _tool().main([cfg]) == 1
    out = capsys.readouterr().out
    assert f'{data}/train/000001.png is empty (0 bytes)' in out
    assert f'{data}/val/000000.png does not exist' in out
    assert f'[train] warning: dropped 1 of {len(coco["annotations"])} boxes: 1 unknown ' \
           'category id (ids 42)' in out
    # the summary table: one row per annotation file (test_dataloader is val_dataloader)
    assert out.count('| train ') == 1 and out.count('| val ') == 1 and '| test ' not in out
