"""Convergence study: mAP vs epoch of DETR, Deformable DETR variants and SMCA-DETR, trained
with one shared recipe on the embedded synthetic dataset (Deformable DETR paper, Fig. 3 style).

One command generates the dataset, trains every model (each in its own process via
``tools/train.py``; ``--jobs`` of them at a time) with COCO evaluation after every epoch, and
writes

* ``<work-dir>/convergence.csv``: model, epoch, bbox_mAP, bbox_mAP_50, wall_time_s,
  train_time_s;
* ``<work-dir>/convergence.png``: mAP vs epoch and mAP vs wall time;
* ``<work-dir>/<model>/``: each run (config, log, vis_data scalars, last checkpoint).

Models whose run already holds every epoch are reused, so an interrupted study continues
where it stopped (use ``--fresh`` to retrain). Full study (on 2 CPU cores: two single-thread
runs side by side; timings in docs/analysis.md)::

    python tools/analysis_tools/convergence_study.py

Reduced run::

    python tools/analysis_tools/convergence_study.py --epochs 2 --scale 0.25 \
        --models detr,ddetr-ms --work-dir work_dirs/convergence_small
"""
import argparse
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence

from mmdet_ddetr.utils.cli import checked, positive_int

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))

CONFIG_DIR = osp.join(REPO, 'configs', 'convergence_study')
#: Study name -> (config file in configs/convergence_study, legend label).
MODELS: Dict[str, tuple] = {
    'detr': ('detr_r18_c4.py', 'DETR (mmdet, C4)'),
    'ddetr-ss': ('ddetr-single-scale_r18_c4.py', 'Deformable DETR single-scale (C4)'),
    'ddetr-ms': ('ddetr_r18.py', 'Deformable DETR'),
    'ddetr-refine': ('ddetr-refine_r18.py', 'Deformable DETR + box refinement'),
    'ddetr-refine-2stage': ('ddetr-refine-twostage_r18.py',
                            'Deformable DETR + refinement + two-stage'),
    'smca-ss': ('smca_r18_c4.py', 'SMCA-DETR single-scale (C4)'),
    'smca-ms': ('smca-ms_r18.py', 'SMCA-DETR multi-scale'),
    # Ablations of single-scale SMCA (issue 13; docs/experiments.md), not in the default
    # study: --models detr,smca-ss,smca-ss-no-prior,smca-ss-fixed,smca-ss-beta-map,ddetr-ss
    'smca-ss-no-prior': ('smca_r18_c4_no-prior.py', 'SMCA single-scale, prior off (C4)'),
    'smca-ss-fixed': ('smca_r18_c4_fixed-scale.py', 'SMCA single-scale, fixed scale (C4)'),
    'smca-ss-beta-map': ('smca_r18_c4_beta-per-map.py',
                         'SMCA single-scale, beta per map size (C4)'),
}
#: The models of the default study (the paper's Fig. 3 comparison).
STUDY_MODELS = ['detr', 'ddetr-ss', 'ddetr-ms', 'ddetr-refine', 'ddetr-refine-2stage',
                'smca-ss', 'smca-ms']
#: Dataset size at --scale 1 (the quickstart dataset) and image side.
BASE_TRAIN, BASE_VAL, IMG_SIZE = 800, 100, 128
#: Default epochs: 7 models x 8 epochs of 800 images fit in the issue's hour on 2 CPU cores
#: with two single-thread runs side by side (measured in docs/analysis.md).
DEFAULT_EPOCHS = 8
#: Default parallel runs: two single-thread runs use 2 cores better than one 2-thread run.
DEFAULT_JOBS = min(2, os.cpu_count() or 1)
#: One batch size for all models (the quickstart configs differ: 8 and 4).
DEFAULT_BATCH = 4


#: --scale: a dataset size factor in (0, 10].
_scale = checked(float, 'a number', lambda v: 0 < v <= 10, '--scale must be in (0, 10]')


def _models(text: str) -> List[str]:
    names = [n.strip() for n in text.split(',') if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f'unknown model(s) {unknown or text!r}; choose from {", ".join(MODELS)}')
    return list(dict.fromkeys(names))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Train DETR / Deformable DETR / SMCA-DETR for the same epochs on the '
        'synthetic dataset; write mAP-vs-epoch CSV and plot.')
    parser.add_argument('--epochs', type=positive_int, default=DEFAULT_EPOCHS,
                        help=f'epochs per model (default {DEFAULT_EPOCHS})')
    parser.add_argument('--scale', type=_scale, default=1.0,
                        help=f'dataset size factor: {BASE_TRAIN} train / {BASE_VAL} val '
                        'images at 1.0 (default 1.0); time grows linearly with it')
    parser.add_argument('--models', type=_models, default=STUDY_MODELS,
                        help=f'comma-separated subset of: {", ".join(MODELS)} (default: '
                        f'{",".join(STUDY_MODELS)})')
    parser.add_argument('--work-dir', default='work_dirs/convergence_study',
                        help='output folder (default work_dirs/convergence_study)')
    parser.add_argument('--data-root', default=None,
                        help='where to generate the dataset (default <work-dir>/data)')
    parser.add_argument('--seed', type=int, default=0, help='data and training seed')
    parser.add_argument('--workers', type=int, default=0,
                        help='dataloader workers per run (default 0: the images are tiny)')
    parser.add_argument('--batch-size', type=positive_int, default=DEFAULT_BATCH,
                        help=f'batch size of every model (default {DEFAULT_BATCH}: at this '
                        'budget the number of updates limits a DETR more than gradient noise)')
    parser.add_argument('--jobs', type=positive_int, default=DEFAULT_JOBS,
                        help='models trained at the same time (default min(2, cores) = '
                        f'{DEFAULT_JOBS}); several single-thread runs use a few cores better '
                        'than one multi-thread run')
    parser.add_argument('--threads', type=positive_int, default=None,
                        help='CPU threads per training process (OMP/MKL_NUM_THREADS); default: '
                        'torch\'s choice (all cores) with --jobs 1, else cores // jobs. Use 1 '
                        'on a CPU shared with other jobs: oversubscribed OpenMP threads slow '
                        'training down many times')
    parser.add_argument('--fresh', action='store_true',
                        help='retrain models that already have a complete run')
    args = parser.parse_args(argv)
    if args.workers < 0:
        parser.error(f'--workers must be >= 0, got {args.workers}')
    if osp.exists(args.work_dir) and not osp.isdir(args.work_dir):
        parser.error(f'--work-dir {args.work_dir!r} exists and is not a folder')
    if args.data_root is None:
        args.data_root = osp.join(args.work_dir, 'data')
    if args.threads is None and args.jobs > 1:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    return args


def dataset_sizes(scale: float) -> tuple:
    """(num_train, num_val) at ``scale``; at least one batch of each."""
    return max(8, round(BASE_TRAIN * scale)), max(8, round(BASE_VAL * scale))


def run_model(name: str, args: argparse.Namespace) -> List[Dict]:
    """Train one model (unless an identical complete run exists) and return its rows."""
    import json

    from mmdet_ddetr.analysis.convergence import RECORD_FILE, read_records, study_config
    from mmdet_ddetr.utils.atomic_io import atomic_open
    config_file, _ = MODELS[name]
    run_dir = osp.abspath(osp.join(args.work_dir, name))
    cfg = study_config(osp.join(CONFIG_DIR, config_file), run_dir,
                       osp.abspath(args.data_root), args.epochs, num_workers=args.workers,
                       seed=args.seed, batch_size=args.batch_size)
    num_train, num_val = dataset_sizes(args.scale)
    # What makes two runs the same: the full run config and the generated data. A run is
    # reused only when both match (the data folder name alone does not say which data).
    signature = json.dumps(dict(config=cfg.pretty_text, num_train=num_train, num_val=num_val,
                                seed=args.seed, img_size=IMG_SIZE), sort_keys=True)
    sig_path = osp.join(run_dir, 'study_signature.json')
    rows = read_records(run_dir)
    same = False
    if osp.isfile(sig_path):
        with open(sig_path) as f:
            same = f.read() == signature
    if (not args.fresh and same and
            [r['epoch'] for r in rows] == list(range(1, args.epochs + 1))):
        print(f'[study] {name}: complete run found in {run_dir}, reused', flush=True)
        return rows
    # An incomplete or different run is redone from scratch (only the last checkpoint is
    # kept, so there is nothing to resume from).
    if osp.isdir(run_dir):
        shutil.rmtree(run_dir)
    os.makedirs(run_dir)
    cfg_path = osp.join(run_dir, 'study_config.py')
    cfg.dump(cfg_path)
    cmd = [sys.executable, osp.join(REPO, 'tools', 'train.py'), cfg_path, '--work-dir', run_dir]
    print(f'[study] {name}: training {args.epochs} epoch(s), log {run_dir}/train.log',
          flush=True)
    env = dict(os.environ)
    if args.threads is not None:
        for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
            env[var] = str(args.threads)
    start = time.perf_counter()
    with open(osp.join(run_dir, 'train.log'), 'w') as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, env=env,
                                stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in proc.stdout:
            log.write(line)
            if 'bbox_mAP_copypaste' in line:
                print(f'[study] {name}: {line.strip()[-60:]}', flush=True)
        proc.wait()
    if proc.returncode != 0:
        raise SystemExit(f'[study] {name}: training failed (exit {proc.returncode}); see '
                         f'{run_dir}/train.log')
    rows = read_records(run_dir)
    if not rows:
        raise SystemExit(f'[study] {name}: no {RECORD_FILE} written; see {run_dir}/train.log')
    # Written last: marks the run as complete for this exact setting.
    with atomic_open(sig_path, 'w') as f:
        f.write(signature)
    print(f'[study] {name}: done in {time.perf_counter() - start:.0f}s, final mAP '
          f'{rows[-1]["bbox_mAP"]:.3f}', flush=True)
    return rows


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    args = parse_args(argv)
    from mmdet_ddetr.analysis.convergence import plot_convergence, write_csv
    from mmdet_ddetr.datasets.synthetic import generate_synthetic_dataset

    num_train, num_val = dataset_sizes(args.scale)
    print(f'[study] dataset {args.data_root}: {num_train} train / {num_val} val images, '
          f'{IMG_SIZE}px', flush=True)
    generate_synthetic_dataset(args.data_root, seed=args.seed, num_train=num_train,
                               num_val=num_val, img_size=IMG_SIZE)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        # Each worker thread only waits on its training subprocess.
        runs = list(pool.map(lambda name: run_model(name, args), args.models))
    all_rows = [dict(row, model=MODELS[name][1])
                for name, rows in zip(args.models, runs) for row in rows]
    csv_path = osp.join(args.work_dir, 'convergence.csv')
    png_path = osp.join(args.work_dir, 'convergence.png')
    write_csv(csv_path, all_rows)
    plot_convergence(png_path, all_rows,
                     f'Convergence on synthetic shapes ({num_train} train / {num_val} val '
                     f'images, {args.epochs} epoch{"s" if args.epochs > 1 else ""}, ResNet-18 from '
                     'scratch)')
    print(f'[study] {"model":<42} {"epoch":>5} {"mAP":>6} {"mAP50":>6} {"wall s":>8}')
    for r in all_rows:
        print(f'[study] {r["model"]:<42} {r["epoch"]:>5} {r["bbox_mAP"]:>6.3f} '
              f'{r["bbox_mAP_50"]:>6.3f} {r["wall_time_s"]:>8.0f}')
    print(f'[study] wrote {csv_path} and {png_path}')
    return dict(csv=csv_path, png=png_path, rows=all_rows)


if __name__ == '__main__':
    main()
