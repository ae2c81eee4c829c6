"""Smoke tests of the command-line tools (fast, CPU; the ones that train are marked slow)."""
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
GENERATOR = osp.join(ROOT, 'tools', 'misc', 'generate_synthetic_dataset.py')


def _run(*args):
    return subprocess.run([sys.executable, GENERATOR, *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize('args, message', [
    (['--num-train', '0'], '--num-train: must be >= 1'),
    (['--img-size', 'big'], "--img-size: expected an integer, got 'big'"),
    (['--img-size', '16'], '--img-size: must be >= 32'),
    (['--min-objects', '4', '--max-objects', '2'], 'min_objects <= max_objects'),
    (['--min-rel-size', '1.5'], '--min-rel-size: must be in (0, 1]'),
    (['--no-such-flag'], 'unrecognized arguments'),
])
def test_generator_cli_rejects_bad_args(tmp_path, args, message):
    out = tmp_path / 'ds'
    proc = _run('--out', str(out), *args)
    assert proc.returncode == 2
    assert 'error:' in proc.stderr and message in proc.stderr
    assert not out.exists()  # nothing written on a usage error


def test_generator_cli_writes_and_reuses(tmp_path):
    out = str(tmp_path / 'ds')
    args = ('--out', out, '--seed', '1', '--num-train', '4', '--num-val', '2',
            '--img-size', '64')
    first = _run(*args)
    assert first.returncode == 0, first.stderr
    with open(osp.join(out, 'annotations', 'val.json')) as f:
        assert len(json.load(f)['images']) == 2
    second = _run(*args)
    assert second.returncode == 0 and 'nothing to do' in second.stdout


@pytest.mark.parametrize('missing', ['config', 'checkpoint'])
def test_test_tool_checks_paths_before_building(tmp_path, missing):
    """tools/test.py names a missing config or checkpoint as a usage error, before it builds
    the model or reads any data (the work dir is never created)."""
    config = osp.join(ROOT, 'configs', 'deformable_detr',
                      'deformable-detr_r18_1xb8-quickstart_synthetic.py')
    checkpoint = tmp_path / 'epoch_1.pth'
    if missing == 'config':
        config = str(tmp_path / 'nope.py')
        checkpoint.write_bytes(b'')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), config,
                           str(checkpoint), '--work-dir', str(tmp_path / 'work')],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f'{missing} ' in proc.stderr and 'does not exist' in proc.stderr
    assert not (tmp_path / 'work').exists()


QUICKSTART = osp.join(ROOT, 'configs', 'deformable_detr',
                      'deformable-detr_r18_1xb8-quickstart_synthetic.py')


def _draw_predictions():
    import importlib.util
    spec = importlib.util.spec_from_file_location(
        'draw_predictions_tool', osp.join(ROOT, 'tools', 'misc', 'draw_predictions.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_draw_predictions_names_the_missing_dataset(tmp_path, monkeypatch):
    """Its default image is in the config's dataset: the same error as the training tools
    (data_root, the generate command), before any model is built. Failed before: 'image not
    found: data/synthetic/val/000000.png'."""
    monkeypatch.delenv('MMDET_DDETR_DATA_ROOT', raising=False)
    monkeypatch.chdir(tmp_path)
    tool = _draw_predictions()
    with pytest.raises(SystemExit) as info:
        tool.main([QUICKSTART, 'no.pth'])
    message = str(info.value.code)
    assert 'dataset not found: data/synthetic/val/000000.png does not exist' in message
    assert "data_root='data/synthetic/'" in message
    assert 'python tools/misc/generate_synthetic_dataset.py --out data/synthetic' in message

    # relocated with --cfg-options: the default image is still looked up as given, an image
    # under the new root is reported against it
    with pytest.raises(SystemExit) as info:
        tool.main([QUICKSTART, 'no.pth', '--img', f'{tmp_path}/ds/val/000001.png',
                   '--cfg-options', f'data_root={tmp_path}/ds'])
    assert f"data_root='{tmp_path}/ds/'" in str(info.value.code)
    with pytest.raises(SystemExit, match='image not found: own.png'):
        tool.main([QUICKSTART, 'no.pth', '--img', 'own.png'])


def _tool_env():
    env = {k: v for k, v in os.environ.items() if k != 'MMDET_DDETR_DATA_ROOT'}
    env.update(PYTHONPATH=ROOT, OMP_NUM_THREADS='1')
    return env


@pytest.mark.slow
@pytest.mark.parametrize('tool', ['ours', 'mmdet'])
def test_train_from_another_directory_with_one_data_root_setting(tmp_path, tool):
    """One setting points training and evaluation at the data, from a directory without data/:
    `--cfg-options data_root=...` for tools/train.py (what `mim train mmdet_ddetr` runs), the
    environment variable for mmdet's own tools/train.py (which knows nothing of ours)."""
    data = tmp_path / 'data'
    proc = _run('--out', str(data), '--num-train', '2', '--num-val', '1', '--img-size', '64',
                '--quiet')
    assert proc.returncode == 0, proc.stderr
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    loaders = ('train_dataloader', 'val_dataloader', 'test_dataloader')
    options = ['train_dataloader.batch_size=2', 'train_cfg.max_epochs=1',
               'train_cfg.val_interval=1', 'default_hooks.logger.interval=1',
               *[f'{loader}.num_workers=0' for loader in loaders],
               *[f'{loader}.persistent_workers=False' for loader in loaders]]
    env = _tool_env()
    if tool == 'ours':
        script = osp.join(ROOT, 'tools', 'train.py')
        options.append(f'data_root={data}')
    else:
        import mmdet
        script = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'train.py')
        env['MMDET_DDETR_DATA_ROOT'] = str(data)
    proc = subprocess.run([sys.executable, script, QUICKSTART, '--work-dir',
                           str(tmp_path / 'work'), '--cfg-options', *options],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert 'Epoch(train) [1][1/1]' in out and 'coco/bbox_mAP' in out
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()


@pytest.mark.slow
def test_train_without_data_names_data_root_and_the_generate_command(tmp_path):
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), QUICKSTART,
                           '--work-dir', str(tmp_path / 'work')],
                          cwd=tmp_path, env=_tool_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode != 0
    assert 'dataset not found: data/synthetic/annotations/train.json' in proc.stderr
    assert ('python tools/misc/generate_synthetic_dataset.py --out data/synthetic --seed 0 '
            '--num-train 800 --num-val 100 --img-size 128') in proc.stderr


USER_CONFIG = '''
# A user's own config, as the README tells users to write it: custom_imports names only the
# package, and mmengine's own Runner runs it (no runner of ours).
_base_ = '{quickstart}'
custom_imports = dict(imports=['mmdet_ddetr'], allow_failed_imports=False)
runner_type = 'Runner'
'''


@pytest.mark.slow
def test_mmdet_test_tool_with_a_user_config_loads_our_checkpoint_and_refuses_a_foreign_one(
        tmp_path):
    """mmdet's own tools/test.py: our training checkpoint (MessageHub logs inside) loads with
    only `import mmdet_ddetr`; a checkpoint that does not fit is an error, not a mAP."""
    import mmdet
    data = tmp_path / 'data'
    assert _run('--out', str(data), '--num-train', '2', '--num-val', '1', '--img-size', '64',
                '--quiet').returncode == 0
    env = _tool_env()
    env['MMDET_DDETR_DATA_ROOT'] = str(data)
    workers = [f'{loader}.{key}' for loader in ('train_dataloader', 'val_dataloader',
                                                'test_dataloader')
               for key in ('num_workers=0', 'persistent_workers=False')]
    train = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools', 'train.py'), QUICKSTART, '--work-dir',
         str(tmp_path / 'work'), '--cfg-options', 'train_dataloader.batch_size=2',
         'train_cfg.max_epochs=1', *workers], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=600)
    assert train.returncode == 0, (train.stdout + train.stderr)[-4000:]
    user = tmp_path / 'my_ddetr.py'
    user.write_text(USER_CONFIG.format(quickstart=QUICKSTART))
    mmdet_test = osp.join(osp.dirname(mmdet.__file__), '.mim', 'tools', 'test.py')
    options = ['--cfg-options', *[w for w in workers if w.startswith('test')]]
    ok = subprocess.run([sys.executable, mmdet_test, str(user), str(tmp_path / 'work/epoch_1.pth'),
                         '--work-dir', str(tmp_path / 'test'), *options], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-4000:]
    assert 'coco/bbox_mAP' in ok.stdout + ok.stderr
    # Another model's weights (two-stage keys missing from the plain model's file).
    import torch
    foreign = tmp_path / 'foreign.pth'
    torch.save({'state_dict': {'bbox_head.cls_branches.0.weight': torch.zeros(3, 256)}}, foreign)
    bad = subprocess.run([sys.executable, mmdet_test, str(user), str(foreign), '--work-dir',
                          str(tmp_path / 'test2'), *options], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0 and 'WeightsMismatchError' in out and 'coco/bbox_mAP' not in out


def test_generator_cli_refuses_a_folder_it_did_not_create(tmp_path):
    out = tmp_path / 'photos'
    out.mkdir()
    (out / '000001.png').write_bytes(b'holiday')
    proc = _run('--out', str(out), '--num-train', '2', '--num-val', '1', '--img-size', '64')
    assert proc.returncode == 1
    assert proc.stderr.startswith('error: ') and 'Traceback' not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ['000001.png']
