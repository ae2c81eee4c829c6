# Shared runtime settings (mmdet 3.x conventions).
default_scope = 'mmdet'
# mmengine's Runner, except that compile=True (or a dict of torch.compile arguments) compiles
# the detector's backbone + neck and transformer with dynamic shapes, for training and testing,
# instead of the whole train_step (mmdet_ddetr/engine/runner.py).
runner_type = 'RegionalCompileRunner'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # atomic writes, crash-safe last_checkpoint / max_keep_ckpts (docs/troubleshooting.md)
    checkpoint=dict(type='AtomicCheckpointHook', interval=1),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='DetVisualizationHook'),
    # stop a diverging run (NaN/inf loss, gradient norm or weights) before it is saved,
    # naming the iteration and the last good checkpoint
    divergence_guard=dict(type='DivergenceGuardHook'),
    # reseed every epoch so a resumed run repeats the uninterrupted one exactly
    reseed=dict(type='EpochReseedHook'),
    # no training iterations, or fewer class logits than the data's classes: error before iter 1
    data_check=dict(type='DataModelCheckHook'))

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)

log_level = 'INFO'
load_from = None
resume = False
