# COCO 2017 with the DETR-family training augmentation (multi-scale resize, random crop).
# mmdet's CocoDataset that names class-name mismatches, dropped boxes, unreadable images and a
# missing dataset (mmdet_ddetr/datasets/checked_coco.py, registered by importing mmdet_ddetr)
dataset_type = 'CheckedCocoDataset'
# Relative to the current directory, as in mmdet. One setting moves every dataloader and
# evaluator path: --cfg-options data_root=PATH (tools/train.py, tools/test.py, mim) or
# MMDET_DDETR_DATA_ROOT=PATH (any tool); see mmdet_ddetr/datasets/data_root.py and docs/configs.md.
data_root = '{{$MMDET_DDETR_DATA_ROOT:data/coco}}/'
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize',
                  scales=[(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333),
                          (640, 1333), (672, 1333), (704, 1333), (736, 1333), (768, 1333),
                          (800, 1333)],
                  keep_ratio=True)],
            [dict(type='RandomChoiceResize', scales=[(400, 4200), (500, 4200), (600, 4200)],
                  keep_ratio=True),
             dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                  allow_negative_crop=True),
             dict(type='RandomChoiceResize',
                  scales=[(480, 1333), (512, 1333), (544, 1333), (576, 1333), (608, 1333),
                          (640, 1333), (672, 1333), (704, 1333), (736, 1333), (768, 1333),
                          (800, 1333)],
                  keep_ratio=True)],
        ]),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]
train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=False, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric='bbox',
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
