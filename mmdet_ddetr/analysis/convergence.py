"""Pieces of the convergence study (``tools/analysis_tools/convergence_study.py``).

* :class:`ConvergenceRecordHook`: after every validation, rewrites ``convergence.json`` in the
  work dir with one row per epoch (COCO mAP, mAP@50, wall time since training started, time
  spent training only). Registered in mmdet's HOOKS; a config adds it with
  ``custom_hooks=[dict(type='ConvergenceRecordHook')]`` and
  ``custom_imports`` listing ``mmdet_ddetr.analysis.convergence``.
* :func:`study_config`: one model config turned into a study run (epochs, data, per-epoch
  evaluation, shared schedule).
* :func:`write_csv` / :func:`plot_convergence`: the study's outputs, written atomically.
"""
import csv
import json
import os
import os.path as osp
import time
from typing import Dict, List, Optional, Sequence

from mmengine.hooks import Hook

from mmdet.registry import HOOKS
from ..utils.atomic_io import atomic_open

#: File the hook writes in every run's work dir.
RECORD_FILE = 'convergence.json'
#: CSV columns of the study.
CSV_FIELDS = ('model', 'epoch', 'bbox_mAP', 'bbox_mAP_50', 'wall_time_s', 'train_time_s')


@HOOKS.register_module()
class ConvergenceRecordHook(Hook):
    """Record COCO mAP and wall time after every validation epoch.

    Wall time counts from ``before_train`` (so model building and data loading at start are
    excluded, evaluation included); ``train_time_s`` excludes the validation loops. Only rank 0
    writes.

    Args:
        metric_prefix: Prefix of the evaluator's keys (``coco`` for CocoMetric).
    """

    priority = 'LOWEST'

    def __init__(self, metric_prefix: str = 'coco') -> None:
        self.metric_prefix = metric_prefix
        self.rows: List[Dict] = []
        self._start = None
        self._val_time = 0.0
        self._val_start = None

    def before_train(self, runner) -> None:
        self._start = time.perf_counter()
        path = osp.join(runner.work_dir, RECORD_FILE)
        # A resumed run keeps the rows of the epochs it does not repeat.
        if osp.isfile(path):
            with open(path) as f:
                old = json.load(f).get('rows', [])
            self.rows = [r for r in old if r['epoch'] <= runner.epoch]
            if self.rows:
                self._offset = self.rows[-1]['wall_time_s']
                self._train_offset = self.rows[-1]['train_time_s']
                return
        self._offset = self._train_offset = 0.0

    def before_val_epoch(self, runner) -> None:
        self._val_start = time.perf_counter()

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        now = time.perf_counter()
        if self._start is None:  # validation outside training (runner.val())
            return
        self._val_time += now - (self._val_start or now)
        metrics = metrics or {}
        wall = now - self._start + self._offset
        row = dict(epoch=int(runner.epoch),
                   bbox_mAP=float(metrics.get(f'{self.metric_prefix}/bbox_mAP', float('nan'))),
                   bbox_mAP_50=float(metrics.get(f'{self.metric_prefix}/bbox_mAP_50',
                                                 float('nan'))),
                   wall_time_s=round(wall, 3),
                   train_time_s=round(wall - self._val_time - self._offset +
                                      self._train_offset, 3))
        self.rows = [r for r in self.rows if r['epoch'] != row['epoch']] + [row]
        from mmengine.dist import is_main_process
        if is_main_process():
            with atomic_open(osp.join(runner.work_dir, RECORD_FILE), 'w') as f:
                json.dump(dict(rows=self.rows), f, indent=1)


def read_records(work_dir: str) -> List[Dict]:
    """Rows written by :class:`ConvergenceRecordHook` (empty when there are none)."""
    path = osp.join(work_dir, RECORD_FILE)
    if not osp.isfile(path):
        return []
    with open(path) as f:
        return sorted(json.load(f).get('rows', []), key=lambda r: r['epoch'])


def study_config(config_path: str, work_dir: str, data_root: str, epochs: int,
                 num_workers: int = 0, seed: int = 0, batch_size: Optional[int] = None):
    """Load a model config and turn it into one run of the study.

    Everything that must be equal across models is set here: the data (``data_root``, a
    generated synthetic dataset), ``epochs`` with validation after every epoch, the lr
    schedule (linear warm-up over at most 100 iterations, x0.1 at 80 % of the epochs; the
    step is dropped for runs shorter than 5 epochs), the seed, and one checkpoint (the last).

    Returns:
        mmengine.Config: the run's config.
    """
    from mmengine.config import Config
    cfg = Config.fromfile(config_path)
    data_root = data_root.rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dl = cfg[loader]
        dl.dataset.data_root = data_root
        dl.num_workers = num_workers
        dl.persistent_workers = num_workers > 0
        if batch_size is not None:
            dl.batch_size = batch_size
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = data_root + 'annotations/val.json'
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs, val_interval=1)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100)
    ]
    if epochs >= 5:
        cfg.param_scheduler.append(
            dict(type='MultiStepLR', begin=0, end=epochs, by_epoch=True,
                 milestones=[int(epochs * 0.8)], gamma=0.1))
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=epochs,
                                        max_keep_ckpts=1)
    # The study's own record of mAP and time; the per-epoch images are not needed.
    cfg.default_hooks.visualization = dict(type='DetVisualizationHook', draw=False)
    cfg.custom_hooks = [h for h in cfg.get('custom_hooks', [])
                        if h.get('type') != 'ConvergenceRecordHook']
    cfg.custom_hooks.append(dict(type='ConvergenceRecordHook'))
    imports = list(cfg.get('custom_imports', {}).get('imports', ['mmdet_ddetr']))
    if 'mmdet_ddetr.analysis.convergence' not in imports:
        imports.append('mmdet_ddetr.analysis.convergence')
    cfg.custom_imports = dict(imports=imports, allow_failed_imports=False)
    cfg.randomness = dict(seed=seed, deterministic=False)
    cfg.work_dir = work_dir
    cfg.env_cfg.dist_cfg = dict(backend='gloo')
    return cfg


def write_csv(path: str, rows: Sequence[Dict]) -> None:
    """Write the study's CSV (columns :data:`CSV_FIELDS`) atomically."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with atomic_open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction='ignore',
                                lineterminator='\n')
        writer.writeheader()
        writer.writerows(rows)


def plot_convergence(path: str, rows: Sequence[Dict], title: str) -> str:
    """mAP vs epoch (left, Deformable DETR Fig. 3 style) and vs wall time (right)."""
    from .attention_plots import save_figure
    import matplotlib.pyplot as plt
    models = list(dict.fromkeys(r['model'] for r in rows))
    fig, (ax_e, ax_t) = plt.subplots(1, 2, figsize=(11, 4.2))
    for model in models:
        mine = sorted((r for r in rows if r['model'] == model), key=lambda r: r['epoch'])
        maps = [100 * r['bbox_mAP'] for r in mine]
        ax_e.plot([r['epoch'] for r in mine], maps, marker='o', markersize=3, label=model)
        ax_t.plot([r['wall_time_s'] / 60 for r in mine], maps, marker='o', markersize=3,
                  label=model)
    from matplotlib.ticker import MaxNLocator
    ax_e.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_e.set_xlabel('epoch')
    ax_t.set_xlabel('wall time (min, training + evaluation)')
    for ax in (ax_e, ax_t):
        ax.set_ylabel('COCO bbox mAP (%), val')
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    if models:
        ax_e.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


__all__ = ['ConvergenceRecordHook', 'RECORD_FILE', 'CSV_FIELDS', 'read_records',
           'study_config', 'write_csv', 'plot_convergence']
