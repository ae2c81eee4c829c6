"""End to end: the SMCA quickstart config (shrunk) trains and validates through a real mmengine
Runner on a tiny synthetic dataset, for the single- and the multi-scale model."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from tests.conftest import REPO

QUICKSTART = REPO / 'configs/smca_detr/smca-detr_r18_1xb4-quickstart_synthetic.py'


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory) -> Path:
    from mmdet_ddetr.datasets import generate_synthetic_dataset
    out = tmp_path_factory.mktemp('smca_synthetic')
    generate_synthetic_dataset(str(out), seed=0, num_train=2, num_val=2, img_size=64)
    return out


def _tiny_cfg(data: Path, work_dir: Path, multi_scale: bool) -> Config:
    cfg = Config.fromfile(str(QUICKSTART))
    d, h = 32, 4
    attn = dict(embed_dims=d, num_heads=h, dropout=0.0, batch_first=True)
    ffn = dict(embed_dims=d, feedforward_channels=64, ffn_drop=0.0)
    m = cfg.model
    m.num_queries = 10
    m.neck.out_channels = d
    m.positional_encoding.num_feats = d // 2
    m.bbox_head.embed_dims = d
    m.test_cfg.max_per_img = 10
    if multi_scale:
        ms = Config.fromfile(str(REPO / 'configs/_base_/models/smca-detr-ms_r50.py')).model
        m.type = 'SMCAMultiScaleDETR'
        m.num_feature_levels = 3
        m.backbone.update(num_stages=4, strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1),
                          out_indices=(2, 3))
        m.neck = dict(ms.neck, in_channels=[256, 512], out_channels=d,
                      norm_cfg=dict(type='GN', num_groups=8))
        m.encoder = dict(ms.encoder, layer_types=['intra', 'multi'],
                         layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn))
        m.decoder = dict(ms.decoder, num_layers=2)
        m.decoder.layer_cfg.update(self_attn_cfg=attn, cross_attn_cfg=attn, ffn_cfg=ffn)
    else:
        m.encoder = dict(num_layers=1, layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn))
        m.decoder.num_layers = 2
        m.decoder.layer_cfg.update(self_attn_cfg=attn, cross_attn_cfg=attn, ffn_cfg=ffn)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dl = cfg[loader]
        dl.batch_size = 2
        dl.num_workers = 0
        dl.persistent_workers = False
        dl.dataset.data_root = f'{data}/'
        for t in dl.dataset.pipeline:
            if t['type'] == 'Resize':
                t['scale'] = (64, 64)
    for ev in ('val_evaluator', 'test_evaluator'):
        cfg[ev].ann_file = f'{data}/annotations/val.json'
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=1)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1)
    cfg.log_processor = dict(window_size=1)
    cfg.work_dir = str(work_dir)
    cfg.randomness = dict(seed=0)
    return cfg


@pytest.mark.parametrize('multi_scale', [False, True], ids=['single', 'multi'])
def test_runner_train_and_val(tiny_data, tmp_path, multi_scale):
    runner = Runner.from_cfg(_tiny_cfg(tiny_data, tmp_path, multi_scale))
    before = {k: v.clone() for k, v in runner.model.state_dict().items()
              if k.startswith('decoder.layers.0.gaussian')}
    runner.train()
    after = runner.model.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in before.items())  # prior params learn
    metrics = runner.val()
    assert 0 <= metrics['coco/bbox_mAP'] <= 1
    # the evaluated detections: max_per_img per image, ranked, in the original image
    runner.model.eval()
    with torch.no_grad():
        results = runner.model.val_step(next(iter(runner.val_dataloader)))
    for result in results:
        pred = result.pred_instances
        h, w = result.ori_shape
        assert len(pred) == 10 and (pred.scores[:-1] >= pred.scores[1:]).all()
        assert ((pred.labels >= 0) & (pred.labels < 5)).all()
        assert (pred.bboxes >= 0).all() and (pred.bboxes[:, 0::2] <= w).all()
        assert (pred.bboxes[:, 1::2] <= h).all()
    assert (tmp_path / 'epoch_1.pth').is_file()
