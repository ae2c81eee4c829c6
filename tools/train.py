"""Train a detector with an mmengine Runner (mmdet 3.x command line).

Example::

    python tools/train.py configs/deformable_detr/deformable-detr_r18_1xb8-20e_synthetic.py
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmdet_ddetr  # noqa: E402,F401  (registers the custom modules even without custom_imports)
from mmdet_ddetr.datasets.data_root import load_config  # noqa: E402
from mmdet_ddetr.engine import setup_distributed  # noqa: E402
from mmdet_ddetr.engine.runner import request_compile  # noqa: E402
from mmdet.utils import setup_cache_size_limit_of_dynamo  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the actual total batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint, or from the latest one in the work dir '
        'when no path is given')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. optim_wrapper.optimizer.lr=1e-4; lists as '
        'key="[a,b]" or key=a,b; data_root=PATH moves every dataset and evaluator path')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the backbone and transformer (dynamic shapes; '
                        'matching, losses and optimizer stay eager)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (newer) or --local_rank (older).
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args: argparse.Namespace) -> Config:
    """Load the config and apply the command-line overrides."""
    # data_root in --cfg-options moves every dataset and evaluator path, not only the top key.
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    # Priority: --work-dir > work_dir in the config > ./work_dirs/<config name>.
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print('AMP training is already enabled in the config.')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise RuntimeError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the '
                               'config')
        cfg.auto_scale_lr.enable = True
    if args.compile:
        request_compile(cfg)
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main() -> None:
    args = parse_args()
    # Keeps torch.compile from recompiling without bound when it is enabled in a config.
    setup_cache_size_limit_of_dynamo()
    cfg = build_config(args)
    # Without CUDA: gloo process group + CPU-capable DDP wrapper (mmengine's launcher assumes
    # GPUs). No-op on GPU machines and with --launcher none.
    setup_distributed(cfg, args.launcher)
    # A custom runner type (runner_type) is honoured, as in mmdet.
    if 'runner_type' in cfg:
        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
