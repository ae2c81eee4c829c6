import os
import subprocess
import sys
from pathlib import Path

import mmdet
import pytest
import torch
from mmengine.config import Config

from mmdet_ddetr.converters import (ConverterError, load_checkpoint_file, mmdet_to_ours,
                                    official_to_ours, save_atomic)
from tests.conftest import REPO, build_model, make_batch, official_fixture, small_ddetr_cfg
from tests.tool_helpers import load_tool, run_on_full_disk

TOOL = REPO / 'tools/model_converters/ddetr_to_mmdet_ddetr.py'


def _run_tool(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, cwd=REPO)


def _official_checkpoint(tmp_path, name='ddetr_refine_twostage.pt'):
    fixture = official_fixture(name)
    path = tmp_path / 'official.pth'
    torch.save({'model': fixture['state_dict'], 'epoch': 49}, path)
    return path, fixture


def test_official_checkpoint_converts_to_loadable_file(tmp_path):
    src, fixture = _official_checkpoint(tmp_path)
    dst = tmp_path / 'ours.pth'
    result = _run_tool(src, dst, '--proposal-scoring', 'class0')
    assert result.returncode == 0, result.stderr
    ckpt = torch.load(dst, weights_only=True)
    expected = official_to_ours(fixture['state_dict'], proposal_scoring='class0')
    assert set(ckpt['state_dict']) == set(expected)
    assert not any(k.startswith('transformer.') for k in ckpt['state_dict'])


@pytest.mark.parametrize('payload,message', [
    (b'', 'empty'),
    (b'PK\x03\x04 truncated zip', 'truncated, corrupt'),
])
def test_corrupt_input_is_refused_and_nothing_written(tmp_path, payload, message):
    src = tmp_path / 'bad.pth'
    src.write_bytes(payload)
    dst = tmp_path / 'out.pth'
    result = _run_tool(src, dst)
    assert result.returncode != 0
    assert message in result.stderr
    assert os.listdir(tmp_path) == ['bad.pth']


def test_truncated_real_checkpoint_is_refused(tmp_path):
    src, _ = _official_checkpoint(tmp_path)
    data = src.read_bytes()
    src.write_bytes(data[:len(data) // 2])
    result = _run_tool(src, tmp_path / 'out.pth')
    assert result.returncode != 0 and 'truncated, corrupt' in result.stderr
    assert not (tmp_path / 'out.pth').exists()


def test_checkpoint_of_another_model_is_refused(tmp_path):
    src = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(2, 3, 1, 1)}}, src)
    result = _run_tool(src, tmp_path / 'out.pth')
    assert result.returncode != 0
    assert 'neither an official nor an mmdet Deformable DETR' in result.stderr
    assert not (tmp_path / 'out.pth').exists()


def test_existing_destination_needs_overwrite(tmp_path):
    src, _ = _official_checkpoint(tmp_path, 'ddetr_plain.pt')
    dst = tmp_path / 'out.pth'
    dst.write_bytes(b'keep me')
    result = _run_tool(src, dst)
    assert result.returncode != 0 and '--overwrite' in result.stderr
    assert dst.read_bytes() == b'keep me'
    assert _run_tool(src, dst, '--overwrite').returncode == 0
    assert torch.load(dst, weights_only=True)['state_dict']


def test_save_atomic_leaves_no_partial_file_on_failure(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError('boom')

    with pytest.raises(RuntimeError, match='boom'):
        save_atomic({'x': Unpicklable()}, str(tmp_path / 'out.pth'))
    assert os.listdir(tmp_path) == []


def test_load_missing_file_names_the_path(tmp_path):
    with pytest.raises(ConverterError, match='does not exist'):
        load_checkpoint_file(str(tmp_path / 'nope.pth'))


def test_coco91_layout_keeps_the_80_real_classes():
    fixture = official_fixture('ddetr_refine_twostage.pt')
    sd = {k: v.clone() for k, v in fixture['state_dict'].items()}
    for key in [k for k in sd if k.startswith('class_embed.')]:
        sd[key] = torch.arange(91, dtype=torch.float32).view(91, *([1] * (sd[key].dim() - 1))
                                                              ).expand(91, *sd[key].shape[1:]).clone()
    out = official_to_ours(sd, coco91_to_80=True)
    bias = out['bbox_head.cls_branches.0.bias']
    assert bias.shape == (80, ) and bias[0] == 1 and bias[-1] == 90 and 12 not in bias.tolist()
    # the encoder proposal branch keeps only logit 0, the one proposals are ranked by
    assert out['proposal_generator.cls_branch.bias'].tolist() == [0.0]
    assert 'bbox_head.cls_branches.2.bias' not in out


@pytest.mark.parametrize('variant', [dict(), dict(with_box_refine=True),
                                     dict(with_box_refine=True, as_two_stage=True)])
def test_mmdet_builtin_weights_give_identical_predictions(variant):
    """mmdet's DeformableDETR and ours with converted weights predict the same boxes."""
    from mmdet.registry import MODELS
    # mmdet's two-stage hard-codes a 128-feature proposal embedding, i.e. embed_dims=256.
    ours_cfg = small_ddetr_cfg(num_levels=4, scoring='class0', dims=256, heads=8, **variant)
    mmdet_cfg = {k: v for k, v in ours_cfg.items() if k != 'proposal_generator'}
    mmdet_cfg.update(type='DeformableDETR')
    mmdet_cfg['neck'] = dict(mmdet_cfg['neck'], bias='auto')
    mmdet_cfg['bbox_head'] = dict(mmdet_cfg['bbox_head'], type='DeformableDETRHead',
                                  embed_dims=256)
    # mmdet's top-k fails when k > queries x classes (ours clamps k): use a k both accept.
    ours_cfg['test_cfg'] = dict(max_per_img=20)
    mmdet_cfg['test_cfg'] = dict(max_per_img=20)
    for coder in ('encoder', 'decoder'):
        mmdet_cfg[coder] = dict(mmdet_cfg[coder])
        mmdet_cfg[coder].pop('type', None)
    torch.manual_seed(1)
    theirs = MODELS.build(mmdet_cfg)
    theirs.init_weights()
    for p in theirs.parameters():  # make zero-initialised branches matter
        p.data.add_(torch.randn_like(p) * 0.02)
    ours = build_model(ours_cfg)
    ours.load_state_dict(mmdet_to_ours(theirs.state_dict(), proposal_scoring='class0'))
    ours.eval(), theirs.eval()
    batch = make_batch([(64, 80), (80, 48)])
    with torch.no_grad():
        a = ours(**ours.data_preprocessor(batch), mode='predict')
        b = theirs(**theirs.data_preprocessor(batch), mode='predict')
    for x, y in zip(a, b):
        torch.testing.assert_close(x.pred_instances.scores, y.pred_instances.scores)
        torch.testing.assert_close(x.pred_instances.bboxes, y.pred_instances.bboxes)
        assert torch.equal(x.pred_instances.labels, y.pred_instances.labels)


def _ddetr_tool():
    return load_tool('tools/model_converters/ddetr_to_mmdet_ddetr.py')


def _mmdet_dino_state_dict():
    """A real (shrunk) mmdet DINO: it has "level_embed" and "bbox_head.reg_branches.*" too."""
    from mmdet.registry import MODELS
    cfg = Config.fromfile(str(Path(mmdet.__file__).parent /
                              '.mim/configs/dino/dino-4scale_r50_8xb2-12e_coco.py')).model
    cfg.backbone = dict(type='ResNet', depth=18, out_indices=(1, 2, 3), init_cfg=None)
    cfg.neck.in_channels = [128, 256, 512]
    cfg.encoder.num_layers = cfg.decoder.num_layers = 1
    cfg.num_queries = 10
    return MODELS.build(cfg).state_dict()


def test_a_dino_checkpoint_is_refused_by_architecture(tmp_path, capsys):
    """Today it was "converted" as an mmdet Deformable DETR."""
    src = tmp_path / 'dino.pth'
    torch.save({'state_dict': _mmdet_dino_state_dict()}, src)
    dst = tmp_path / 'out.pth'
    for source in ('auto', 'mmdet'):
        assert _ddetr_tool().main([str(src), str(dst), '--source', source]) == 1
        err = capsys.readouterr().err
        assert err.startswith('error: not a Deformable DETR checkpoint') and 'DINO' in err
    assert not dst.exists()


def test_a_checkpoint_already_in_our_layout_is_refused(tmp_path, capsys):
    src, _ = _official_checkpoint(tmp_path)
    converted = tmp_path / 'ours.pth'
    assert _ddetr_tool().main([str(src), str(converted), '--proposal-scoring', 'class0']) == 0
    again = tmp_path / 'again.pth'
    assert _ddetr_tool().main([str(converted), str(again)]) == 1
    assert 'already in mmdet_ddetr\'s layout (converted before' in capsys.readouterr().err
    # the same weights without our meta: recognised by our weight names
    torch.save({'state_dict': torch.load(converted, weights_only=True)['state_dict']}, src)
    assert _ddetr_tool().main([str(src), str(again)]) == 1
    assert "the weight 'proposal_generator." in capsys.readouterr().err
    assert not again.exists()


@pytest.mark.slow
def test_a_full_disk_is_a_one_line_error_and_writes_nothing(tmp_path):
    src, _ = _official_checkpoint(tmp_path, 'ddetr_plain.pt')
    dst = tmp_path / 'out.pth'
    proc = run_on_full_disk(f'''
        import runpy, sys
        sys.argv = ['ddetr_to_mmdet_ddetr.py', {str(src)!r}, {str(dst)!r}]
        runpy.run_path({str(TOOL)!r}, run_name='__main__')
    ''', limit=4096)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: cannot write '{dst}'") and 'Traceback' not in proc.stderr
    assert proc.stderr.count('\n') == 1, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['official.pth']
