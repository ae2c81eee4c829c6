"""Plot training losses and validation mAP from mmengine scalar logs (PNG).

mmdet's ``analyze_logs.py`` is not shipped in the pip package; this reads what mmengine writes
in every work dir (``<work_dir>/<timestamp>/vis_data/scalars.json``; several timestamp folders
of one work dir, e.g. a resumed run, are merged) and draws, side by side,

* the training losses (``--keys``, default ``loss``) vs iteration (or ``--x epoch``),
* the validation metrics (``--metrics``, default ``coco/bbox_mAP``) vs epoch.

Examples::

    python tools/analysis_tools/plot_logs.py work_dirs/demo --out work_dirs/demo/curves.png
    python tools/analysis_tools/plot_logs.py work_dirs/a work_dirs/b --legend A B \
        --keys loss loss_cls loss_bbox --metrics coco/bbox_mAP coco/bbox_mAP_50 --out ab.png
"""
import argparse
import os.path as osp
from typing import List, Optional, Sequence


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Plot loss and bbox mAP curves from mmengine vis_data/scalars.json logs.')
    parser.add_argument('runs', nargs='+',
                        help='work dirs (all vis_data/scalars.json under them) or json files')
    parser.add_argument('--keys', nargs='+', default=['loss'],
                        help='training scalars to plot (default: loss)')
    parser.add_argument('--metrics', nargs='+', default=['coco/bbox_mAP'],
                        help='validation metrics to plot (default: coco/bbox_mAP)')
    parser.add_argument('--x', choices=['iter', 'epoch'], default='iter',
                        help='x axis of the training curves (default iter)')
    parser.add_argument('--legend', nargs='+', help='one name per run (default: folder names)')
    parser.add_argument('--out', required=True, help='PNG file to write')
    parser.add_argument('--title', default=None, help='figure title')
    args = parser.parse_args(argv)
    for run in args.runs:
        if not osp.exists(run):
            parser.error(f'run {run!r} does not exist')
    if args.legend is not None and len(args.legend) != len(args.runs):
        parser.error(f'--legend has {len(args.legend)} names for {len(args.runs)} runs')
    if not args.out.lower().endswith('.png'):
        parser.error(f'--out must be a .png file, got {args.out!r}')
    if osp.isdir(args.out):
        parser.error(f'--out {args.out!r} is a directory')
    return args


def _run_name(path: str) -> str:
    path = osp.normpath(path)
    if osp.isfile(path):  # .../<work_dir>/<ts>/vis_data/scalars.json
        parts = path.split(osp.sep)
        return parts[-4] if len(parts) >= 4 else path
    return osp.basename(path)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    from mmdet_ddetr.analysis.attention_plots import save_figure
    from mmdet_ddetr.analysis.logs import find_scalars, load_scalars
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    names = args.legend or [_run_name(r) for r in args.runs]
    logs = []
    for run in args.runs:
        try:
            logs.append(load_scalars(find_scalars(run)))
        except (FileNotFoundError, ValueError) as e:
            raise SystemExit(f'error: {e}')
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(12, 4.2))
    drawn_l = drawn_m = 0
    epochs_seen = set()
    missing: List[str] = []
    for name, log in zip(names, logs):
        for key in args.keys:
            xs, ys = log.series(key, args.x)
            if not xs:
                missing.append(f'{name}:{key}')
                continue
            label = key if len(logs) == 1 else f'{name} {key}'
            ax_l.plot(xs, ys, label=label, linewidth=1.2)
            drawn_l += 1
        for key in args.metrics:
            xs, ys = log.val_series(key)
            if not xs:
                missing.append(f'{name}:{key}')
                continue
            label = key if len(logs) == 1 else f'{name} {key}'
            ax_m.plot(xs, [100 * y for y in ys], marker='o', markersize=3, label=label)
            epochs_seen.update(xs)
            drawn_m += 1
    if drawn_l + drawn_m == 0:
        available = sorted({k for log in logs for k in log.train_keys() + log.val_keys()})
        raise SystemExit(f'error: none of {args.keys + args.metrics} is in the logs; '
                         f'available: {", ".join(available)}')
    ax_l.set_xlabel(args.x)
    ax_l.set_ylabel('training loss')
    ax_l.set_title('training losses', fontsize=10)
    ax_m.set_xlabel('epoch')
    ax_m.set_ylabel('metric x 100 (%)')
    ax_m.set_title('validation', fontsize=10)
    if len(epochs_seen) > 1:
        ax_m.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:  # one evaluation (e.g. only at the end): a single tick, not fractional ones
        ax_m.set_xticks(sorted(epochs_seen))
    for ax, n in ((ax_l, drawn_l), (ax_m, drawn_m)):
        ax.grid(True, alpha=0.3)
        if n:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, 'nothing logged', ha='center', va='center',
                    transform=ax.transAxes, color='gray')
    fig.suptitle(args.title or ', '.join(names), fontsize=10)
    save_figure(fig, args.out)
    for m in missing:
        print(f'not in the logs: {m}')
    print(f'wrote {args.out}')
    return dict(out=args.out, missing=missing, curves=drawn_l + drawn_m)


if __name__ == '__main__':
    main()
