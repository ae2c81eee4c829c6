"""converters.smca and its CLI (tools/model_converters/smca_official_to_mmdet_ddetr.py): key
mapping, COCO remap, safety."""
import argparse
from pathlib import Path

import pytest
import torch

from mmdet.registry import MODELS
from mmdet_ddetr.converters import (COCO80_IDS, ConverterError,
                                    convert_smca_official_state_dict, infer_smca_hparams,
                                    remap_coco91_to_80)
from mmdet_ddetr.parity.smca import model_config
from tests.conftest import official_fixture
from tests.tool_helpers import load_tool


def _tool():
    return load_tool('tools/model_converters/smca_official_to_mmdet_ddetr.py')


def _official_checkpoint():
    """A checkpoint shaped like the official one: fixture weights + a ResNet-18 body under
    backbone.0.body.* (FrozenBatchNorm: no num_batches_tracked) + args Namespace."""
    fixture = official_fixture('smca_single_scale.pt')
    resnet = MODELS.build(dict(type='ResNet', depth=18, out_indices=(3, ), init_cfg=None))
    body = {f'backbone.0.body.{k}': v for k, v in resnet.state_dict().items()
            if not k.endswith('num_batches_tracked')}
    model = dict(body, **{k: v.float() for k, v in fixture['state_dict'].items()})
    return fixture, dict(model=model, args=argparse.Namespace(lr=1e-4), epoch=49)


def test_converted_keys_fit_our_model_exactly():
    fixture, ckpt = _official_checkpoint()
    converted = convert_smca_official_state_dict(ckpt)
    cfg = model_config(fixture['meta'])
    cfg['backbone'] = dict(type='ResNet', depth=18, out_indices=(3, ), init_cfg=None)
    model = MODELS.build(cfg)
    model.load_state_dict(converted, strict=True)  # every key, every shape
    assert torch.equal(model.backbone.conv1.weight, ckpt['model']['backbone.0.body.conv1.weight'])
    hp = infer_smca_hparams(ckpt)
    assert hp == dict(embed_dims=256, num_heads=8, num_encoder_layers=1, num_decoder_layers=2,
                      feedforward_channels=64, num_queries=30, num_classes=5,
                      scale_type='fixed', in_channels=128)


def test_cli_writes_atomically_and_refuses_overwrite(tmp_path: Path, capsys):
    tool = _tool()
    _, ckpt = _official_checkpoint()
    src, dst = tmp_path / 'official.pth', tmp_path / 'out' / 'smca.pth'
    torch.save(ckpt, src)
    assert tool.main([str(src), str(dst)]) == 1  # the folder must exist
    assert 'does not exist' in capsys.readouterr().err
    dst.parent.mkdir()
    assert tool.main([str(src), str(dst)]) == 0
    out = torch.load(dst, weights_only=True)
    assert 'backbone.layer4.1.bn2.num_batches_tracked' in out['state_dict']
    assert out['meta']['smca_hparams']['num_heads'] == 8
    stamp = dst.stat().st_mtime_ns
    assert tool.main([str(src), str(dst)]) == 1
    assert 'pass --overwrite' in capsys.readouterr().err
    assert dst.stat().st_mtime_ns == stamp
    assert tool.main([str(src), str(dst), '--overwrite']) == 0
    assert sorted(p.name for p in dst.parent.iterdir()) == ['smca.pth']  # no temp left


def test_cli_rejects_corrupt_and_unrelated(tmp_path: Path, capsys):
    tool = _tool()
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'PK\x03\x04 definitely not a checkpoint')
    dst = tmp_path / 'dst.pth'
    assert tool.main([str(corrupt), str(dst)]) == 1
    assert 'cannot read' in capsys.readouterr().err
    unrelated = tmp_path / 'unrelated.pth'
    torch.save({'model': {'fc.weight': torch.zeros(2, 2)}}, unrelated)
    assert tool.main([str(unrelated), str(dst)]) == 1
    assert 'not an official single-scale SMCA' in capsys.readouterr().err
    assert not dst.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        'corrupt.pth', 'unrelated.pth']


def test_extra_unknown_key_is_an_error():
    _, ckpt = _official_checkpoint()
    ckpt['model']['transformer.encoder.norm.weight'] = torch.ones(256)  # pre-norm model
    with pytest.raises(ConverterError, match='no mapping'):
        convert_smca_official_state_dict(ckpt)


def test_coco91_remap():
    sd = {'bbox_head.fc_cls.weight': torch.arange(92.)[:, None].repeat(1, 3),
          'bbox_head.fc_cls.bias': torch.arange(92.)}
    out = remap_coco91_to_80(sd)
    assert out['bbox_head.fc_cls.bias'].tolist() == [float(i) for i in COCO80_IDS] + [91.]
    with pytest.raises(ConverterError, match='expected a 91'):
        remap_coco91_to_80({'bbox_head.fc_cls.weight': torch.zeros(6, 3)})


def test_cli_refuses_a_checkpoint_already_in_our_layout(tmp_path: Path, capsys):
    """Today: 'not an official single-scale SMCA-DETR checkpoint: missing [...]'."""
    tool = _tool()
    _, ckpt = _official_checkpoint()
    src, ours, again = tmp_path / 'official.pth', tmp_path / 'ours.pth', tmp_path / 'again.pth'
    torch.save(ckpt, src)
    assert tool.main([str(src), str(ours)]) == 0
    assert tool.main([str(ours), str(again)]) == 1
    assert "already in mmdet_ddetr's layout (converted before" in capsys.readouterr().err
    torch.save({'state_dict': torch.load(ours, weights_only=True)['state_dict']}, ours)
    assert tool.main([str(ours), str(again)]) == 1
    assert "already in mmdet_ddetr's layout (it has the weight" in capsys.readouterr().err
    assert not again.exists()
