"""A tiny DDETR training config on a tiny synthetic dataset, for real-process engine tests.

Built on the quickstart config (so the tests train what users train), shrunk until an iteration
takes a fraction of a second on one CPU thread.
"""
from pathlib import Path

from tests.engine._helpers import REPO

QUICKSTART = REPO / 'configs/deformable_detr/deformable-detr_r18_1xb8-quickstart_synthetic.py'

TINY_DDETR = '''
_base_ = ['{quickstart}']
custom_imports = dict(imports=['mmdet_ddetr',
                               'tests.engine._faults'],
                      allow_failed_imports=False)
d, h, f = 32, 4, 64
attn = dict(embed_dims=d, num_heads=h, dropout={dropout})
model = dict(
    num_queries=10,
    neck=dict(out_channels=d, norm_cfg=dict(type='GN', num_groups=8)),
    encoder=dict(num_layers=1, layer_cfg=dict(
        self_attn_cfg=attn,
        ffn_cfg=dict(embed_dims=d, feedforward_channels=f, ffn_drop={dropout}))),
    decoder=dict(num_layers=2, layer_cfg=dict(
        self_attn_cfg=attn, cross_attn_cfg=attn,
        ffn_cfg=dict(embed_dims=d, feedforward_channels=f, ffn_drop={dropout}))),
    positional_encoding=dict(num_feats=d // 2),
    bbox_head=dict(embed_dims=d),
    test_cfg=dict(max_per_img=10))
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob={flip}),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='PackDetInputs')]
train_dataloader = dict(
    batch_size={batch_size}, num_workers=0, persistent_workers=False,
    dataset=dict(data_root='{data}/', pipeline=pipeline))
max_epochs = {max_epochs}
train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=3),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[2], gamma=0.1)]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=1),
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=-1),
    divergence_guard=dict(type='DivergenceGuardHook'),
    reseed=dict(type='EpochReseedHook'))
log_processor = dict(window_size=1)
randomness = dict(seed=0, deterministic=True)
custom_hooks = {custom_hooks}
'''
VAL = '''
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root='{data}/', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file='{data}/annotations/val.json')
test_evaluator = val_evaluator
'''
NO_VAL = '''
val_cfg = None
val_dataloader = None
val_evaluator = None
'''


def make_tiny_dataset(out_dir: Path) -> Path:
    from mmdet_ddetr.datasets import generate_synthetic_dataset
    generate_synthetic_dataset(str(out_dir), seed=0, num_train=8, num_val=2, img_size=64)
    return out_dir


def write_ddetr_config(path: Path, data: Path, max_epochs: int = 3, batch_size: int = 2,
                       dropout: float = 0.1, flip: float = 0.5, validate: bool = True,
                       custom_hooks: str = '[]', extra: str = '') -> Path:
    text = TINY_DDETR.format(quickstart=QUICKSTART, data=data, max_epochs=max_epochs,
                             batch_size=batch_size, dropout=dropout, flip=flip,
                             custom_hooks=custom_hooks)
    text += (VAL if validate else NO_VAL).format(data=data) + extra
    path.write_text(text)
    return path
