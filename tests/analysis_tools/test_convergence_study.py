"""Convergence study end to end at a tiny size, its configs, and the log plotter."""
import csv
import glob
import json
import sys
from pathlib import Path

import pytest
import torch

from mmdet_ddetr.analysis.convergence import study_config
from mmdet_ddetr.analysis.logs import load_scalars
from tests.conftest import make_batch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tools' / 'analysis_tools'))

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def test_study_end_to_end(tmp_path):
    """--epochs 1 on 8 + 8 images, the two cheapest models trained side by side: CSV rows
    (in --models order) and PNG exist, and a second call reuses the finished runs."""
    import convergence_study
    work = tmp_path / 'study'
    args = ['--epochs', '1', '--scale', '0.01', '--models', 'detr,ddetr-ss',
            '--work-dir', str(work), '--threads', '1', '--jobs', '2']
    res = convergence_study.main(args)
    with open(res['csv']) as f:
        rows = list(csv.DictReader(f))
    assert [(r['model'], r['epoch']) for r in rows] == [
        ('DETR (mmdet, C4)', '1'), ('Deformable DETR single-scale (C4)', '1')]
    for r in rows:
        assert 0.0 <= float(r['bbox_mAP']) <= 1.0
        assert float(r['wall_time_s']) >= float(r['train_time_s']) > 0
    assert Path(res['png']).read_bytes()[:8] == PNG_MAGIC
    assert len(glob.glob(str(work / 'ddetr-ss' / 'epoch_1.pth'))) == 1
    # Scalars logged by the runs are readable by the log plotter.
    import plot_logs
    out = plot_logs.main([str(work / 'detr'), str(work / 'ddetr-ss'), '--out',
                          str(tmp_path / 'curves.png')])
    assert out['curves'] >= 2
    assert (tmp_path / 'curves.png').read_bytes()[:8] == PNG_MAGIC
    # Finished runs are reused, not retrained.
    before = (work / 'detr' / 'convergence.json').stat().st_mtime_ns
    convergence_study.main(args)
    assert (work / 'detr' / 'convergence.json').stat().st_mtime_ns == before


@pytest.mark.parametrize('name', ['detr', 'ddetr-ss', 'ddetr-ms', 'ddetr-refine',
                                  'ddetr-refine-2stage', 'smca-ss', 'smca-ms',
                                  'smca-ss-no-prior', 'smca-ss-fixed', 'smca-ss-beta-map'])
def test_study_models_train_one_step(name, tmp_path):
    """Every study model builds from its study config and gives finite losses."""
    import convergence_study
    from mmdet.registry import MODELS
    cfg_file = REPO / 'configs/convergence_study' / convergence_study.MODELS[name][0]
    cfg = study_config(str(cfg_file), str(tmp_path), str(tmp_path / 'data'), epochs=3)
    assert cfg.train_cfg.max_epochs == 3 and cfg.train_cfg.val_interval == 1
    assert cfg.val_evaluator.ann_file == str(tmp_path / 'data') + '/annotations/val.json'
    assert cfg.custom_hooks[-1]['type'] == 'ConvergenceRecordHook'
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    batch = make_batch([(96, 96)], num_classes=5)
    losses = model.loss(batch['inputs'], batch['data_samples'])
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()


def test_parallel_jobs_split_the_cores_unless_threads_given():
    import os

    import convergence_study
    assert convergence_study.parse_args(['--jobs', '2']).threads == max(
        1, (os.cpu_count() or 1) // 2)
    assert convergence_study.parse_args(['--jobs', '2', '--threads', '3']).threads == 3
    assert convergence_study.parse_args(['--jobs', '1']).threads is None


def test_study_cli_errors(capsys):
    import convergence_study
    for argv, msg in ((['--epochs', '0'], 'positive integer'),
                      (['--scale', '-1'], '--scale must be'),
                      (['--models', 'detr,yolo'], 'unknown model'),
                      (['--jobs', '0'], 'positive integer')):
        with pytest.raises(SystemExit):
            convergence_study.parse_args(argv)
        assert msg in capsys.readouterr().err


def test_scalars_merge_and_plot_errors(tmp_path, capsys):
    import plot_logs
    run = tmp_path / 'run' / '20260101_000000' / 'vis_data'
    run.mkdir(parents=True)
    lines = [dict(loss=3.0, iter=10, epoch=1, step=10), dict(loss=2.0, iter=20, epoch=1, step=20),
             {'coco/bbox_mAP': 0.1, 'step': 1}, {'coco/bbox_mAP': 0.2, 'step': 2}]
    (run / 'scalars.json').write_text('\n'.join(json.dumps(x) for x in lines) + '\n')
    # A resumed run repeats iteration 20 and epoch 2: the later values win.
    run2 = tmp_path / 'run' / '20260101_010000' / 'vis_data'
    run2.mkdir(parents=True)
    (run2 / 'scalars.json').write_text(json.dumps(dict(loss=1.5, iter=20, epoch=1, step=20)) +
                                       '\n' + json.dumps({'coco/bbox_mAP': 0.3, 'step': 2}))
    from mmdet_ddetr.analysis.logs import find_scalars
    log = load_scalars(find_scalars(str(tmp_path / 'run')))
    assert log.series('loss') == ([10, 20], [3.0, 1.5])
    assert log.val_series('coco/bbox_mAP') == ([1, 2], [0.1, 0.3])
    res = plot_logs.main([str(tmp_path / 'run'), '--out', str(tmp_path / 'c.png')])
    assert res['curves'] == 2
    with pytest.raises(SystemExit, match='available'):
        plot_logs.main([str(tmp_path / 'run'), '--keys', 'nope', '--metrics', 'nope',
                        '--out', str(tmp_path / 'd.png')])
    with pytest.raises(SystemExit):
        plot_logs.parse_args([str(tmp_path / 'run'), '--out', str(tmp_path / 'c.jpg')])
    assert '.png' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        plot_logs.parse_args([str(tmp_path / 'missing'), '--out', 'x.png'])
    assert 'does not exist' in capsys.readouterr().err
    bad = tmp_path / 'bad.json'
    bad.write_text('{"loss": 1}\nnot json\n')
    with pytest.raises(SystemExit, match='bad.json:2'):
        plot_logs.main([str(bad), '--out', str(tmp_path / 'e.png')])
