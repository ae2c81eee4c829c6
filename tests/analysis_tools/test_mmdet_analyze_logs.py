"""mmdet's own analysis tools on our models: everything they import is installed (seaborn for
``analyze_logs.py`` comes from requirements/mim.txt), and ``analyze_logs.py`` plots and times
the json log of a real (short) training run of ours."""
import ast
import importlib.util
import re
import subprocess
import sys

import pytest

from tests.engine._helpers import REPO, run, train_cmd, train_env

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _imported_modules(path) -> set:
    """Top-level names of the absolute imports of a Python file (guarded ones included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split('.')[0])
    return names


def test_mmdet_analysis_tools_imports_installed(mmdet_tool):
    """Every module that mmdet's detection analysis tools import can be found (the MOT tools
    under analysis_tools/mot/ are for trackers and out of scope)."""
    tools = sorted(mmdet_tool('analysis_tools/analyze_logs.py').parent.glob('*.py'))
    assert len(tools) > 10  # analyze_logs, benchmark, get_flops, browse_dataset, ...
    missing = {}
    for tool in tools:
        for name in _imported_modules(tool):
            if importlib.util.find_spec(name) is None:
                missing.setdefault(name, []).append(tool.name)
    assert not missing, f'not installed (add to requirements/mim.txt): {missing}'


@pytest.mark.slow
def test_analyze_logs_on_our_training_log(tmp_path, mmdet_tool):
    """Two epochs of the quickstart model on 4 images, batch 1 (log every iteration, validate
    every epoch), then mmdet's analyze_logs.py plot_curve (losses and bbox mAP) and
    cal_train_time on the json log the run wrote.

    cal_train_time needs 3 or more logged iterations per epoch: the tool files the first line
    of each epoch under the previous one and drops the first time of every epoch, so with 2 it
    prints nan (docs/analysis.md).
    """
    from mmdet_ddetr.datasets import generate_synthetic_dataset
    data = tmp_path / 'data'
    generate_synthetic_dataset(str(data), seed=0, num_train=4, num_val=2, img_size=64)
    config = REPO / 'configs/deformable_detr/deformable-detr_r18_1xb8-quickstart_synthetic.py'
    work = tmp_path / 'work'
    loader = dict(num_workers=0, persistent_workers=False, batch_size=1)
    opts = [f'train_dataloader.dataset.data_root={data}/',
            f'val_dataloader.dataset.data_root={data}/',
            f'val_evaluator.ann_file={data}/annotations/val.json',
            'train_cfg.max_epochs=2', 'train_cfg.val_interval=1',
            'default_hooks.logger.interval=1', 'log_processor.window_size=1']
    for split in ('train', 'val'):
        opts += [f'{split}_dataloader.{k}={v}' for k, v in loader.items()]
    run(train_cmd(config, work, '--cfg-options', *opts), timeout=600)
    logs = sorted(work.glob('*/vis_data/[0-9]*.json'))
    assert len(logs) == 1, logs
    log = str(logs[0])

    tool = str(mmdet_tool('analysis_tools/analyze_logs.py'))
    png = tmp_path / 'curves.png'
    env = train_env(dict(MPLBACKEND='Agg'))
    plot = subprocess.run([sys.executable, tool, 'plot_curve', log, '--keys', 'loss',
                           'loss_cls', 'bbox_mAP', '--out', str(png)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert plot.returncode == 0, plot.stderr[-3000:]
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert plot.stdout.count('plot curve of') == 3

    timing = subprocess.run([sys.executable, tool, 'cal_train_time', log], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert timing.returncode == 0, timing.stderr[-3000:]
    mean = re.search(r'average iter time: ([0-9.]+) s/iter', timing.stdout)
    assert mean is not None and float(mean.group(1)) > 0, timing.stdout
    assert 'slowest epoch' in timing.stdout and 'fastest epoch' in timing.stdout
