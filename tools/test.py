"""Evaluate a trained detector with an mmengine Runner (mmdet 3.x command line).

Example::

    python tools/test.py CONFIG CHECKPOINT --out results.pkl --show-dir vis
"""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.evaluator import DumpResults  # noqa: E402
from mmengine.fileio import dump  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.registry import RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import mmdet_ddetr  # noqa: E402,F401  (registers the custom modules even without custom_imports)
from mmdet_ddetr.datasets.data_root import load_config  # noqa: E402
from mmdet_ddetr.utils.atomic_io import atomic_open  # noqa: E402
from mmdet.utils import setup_cache_size_limit_of_dynamo  # noqa: E402


class AtomicDumpResults(DumpResults):
    """mmengine's ``DumpResults``, written to a temporary file beside ``out_file_path`` and
    renamed: a full disk or a kill leaves the previous results whole, not a truncated pickle."""

    def compute_metrics(self, results: list) -> dict:
        # mmengine's dump created the folder; keep that.
        os.makedirs(osp.dirname(osp.abspath(self.out_file_path)), exist_ok=True)
        with atomic_open(self.out_file_path, 'wb') as f:
            dump(results, f, file_format='pkl')
        print_log(f'Results has been saved to {self.out_file_path}.', logger='current')
        return {}


def add_dump_results(evaluator, out: str) -> None:
    """Append the raw-prediction dump for ``--out`` to ``evaluator``'s metrics (after the
    metric, so that the predictions are saved as well)."""
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError('--out must be a .pkl or .pickle file')
    evaluator.metrics.append(AtomicDumpResults(out_file_path=out))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint',
                        help='checkpoint file (.pth), or the .onnx file with --backend onnxruntime')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', type=str,
                        help='dump the raw predictions to a pickle file (.pkl/.pickle)')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir',
                        help='directory, relative to the work dir\'s timestamped run folder, '
                        'where painted images are saved')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of show (s)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, e.g. test_evaluator.classwise=True; '
        'data_root=PATH moves every dataset and evaluator path')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the backbone and transformer (dynamic shapes)')
    parser.add_argument('--backend', choices=['pytorch', 'onnxruntime'], default='pytorch',
                        help='onnxruntime: evaluate an exported .onnx file (CPU) with the '
                        'config\'s dataloader and evaluator')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    # Fail before building the model and the data (minutes for a COCO model).
    if not osp.isfile(args.config):
        parser.error(f'config file {args.config!r} does not exist')
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint {args.checkpoint!r} does not exist (check the path)')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_visualization(cfg: Config, args: argparse.Namespace) -> None:
    """Switch the DetVisualizationHook on for --show / --show-dir."""
    hooks = cfg.default_hooks
    if 'visualization' not in hooks:
        raise RuntimeError('--show/--show-dir need default_hooks.visualization '
                           '(a DetVisualizationHook) in the config')
    hooks.visualization.draw = True
    if args.show:
        hooks.visualization.show = True
        hooks.visualization.wait_time = args.wait_time
    if args.show_dir:
        hooks.visualization.test_out_dir = args.show_dir


def main() -> None:
    args = parse_args()
    setup_cache_size_limit_of_dynamo()
    # data_root in --cfg-options moves every dataset and evaluator path, not only the top key.
    cfg = load_config(args.config, args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    if args.backend == 'onnxruntime':
        if args.compile:
            raise SystemExit('--compile applies to the PyTorch backend, not to onnxruntime')
        if not args.checkpoint.endswith('.onnx'):
            raise SystemExit(f'--backend onnxruntime needs an .onnx file, got {args.checkpoint}')
        import mmdet_ddetr.deployment  # noqa: F401  (registers OrtDetectorModel)
        cfg.model = dict(type='OrtDetectorModel', onnx_file=args.checkpoint)
        cfg.load_from = None
        cfg.compile = None  # a config's compile=True is about the PyTorch model
    if args.show or args.show_dir:
        enable_visualization(cfg, args)
    if args.compile:
        from mmdet_ddetr.engine.runner import request_compile
        request_compile(cfg)

    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    if args.out is not None:
        add_dump_results(runner.test_evaluator, args.out)
    runner.test()


if __name__ == '__main__':
    main()
