"""Run real training processes (tools/train.py, tools/dist_train.sh) and kill them on cue."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
TOY_EPOCHS = 3  # toy runs: 16 samples, batch 2 -> 8 iterations per epoch


def train_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """Environment of a training subprocess: one thread (deterministic CPU kernels, and two
    processes share 2 cores), repo importable, fixed hash seed."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONHASHSEED='0',
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get('PYTHONPATH')) if p),
               PYTHONUNBUFFERED='1')
    env.update(extra or {})
    return env


def train_cmd(config: Path, work_dir: Path, *args: str) -> List[str]:
    return [PY, str(REPO / 'tools/train.py'), str(config), '--work-dir', str(work_dir), *args]


def run(cmd: Sequence[str], timeout: float, env: Optional[Dict[str, str]] = None,
        expect_ok: bool = True) -> subprocess.CompletedProcess:
    """Run to completion; on an unexpected exit status fail with the end of the output."""
    proc = subprocess.run(list(cmd), cwd=REPO, env=env or train_env(), timeout=timeout,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if expect_ok and proc.returncode != 0:
        raise AssertionError(f'{" ".join(cmd)} exited with {proc.returncode}:\n'
                             f'{proc.stdout[-6000:]}')
    return proc


def run_until_marker_then_kill(cmd: Sequence[str], marker: Path, timeout: float,
                               env: Optional[Dict[str, str]] = None) -> str:
    """Start ``cmd``, wait until the fault hook creates ``marker``, then SIGKILL the process
    that created it (the training process itself). Returns the output so far."""
    out_path = marker.with_suffix('.out')
    with open(out_path, 'w') as out:
        proc = subprocess.Popen(list(cmd), cwd=REPO, env=env or train_env(), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        try:
            while not marker.exists():
                if proc.poll() is not None:
                    raise AssertionError(f'process exited ({proc.returncode}) before the fault '
                                         f'point:\n{out_path.read_text()[-6000:]}')
                if time.monotonic() > deadline:
                    raise AssertionError(f'fault point not reached in {timeout}s:\n'
                                         f'{out_path.read_text()[-6000:]}')
                time.sleep(0.05)
            time.sleep(0.05)  # the pid is written right after the file is created
            pid = int(marker.read_text() or proc.pid)
            os.kill(pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                # With a launcher (torchrun) the other processes follow the killed one; make
                # sure nothing we started outlives the test.
                time.sleep(0.5)
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    return out_path.read_text()


def load_checkpoint(path: Path) -> Dict:
    """A Runner checkpoint, loaded the safe way (weights-only, Runner-checkpoint globals)."""
    from mmdet_ddetr.engine import load_from_local
    return load_from_local(str(path), map_location='cpu')


def load_state(path: Path) -> Dict[str, torch.Tensor]:
    """The weights of a Runner checkpoint."""
    return load_checkpoint(path)['state_dict']


def max_abs_diff(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) if a[k].numel() else 0.0
               for k in a)


TOY_CONFIG = '''
default_scope = 'mmdet'
custom_imports = dict(
    imports=['mmdet_ddetr', 'tests.engine._toy',
             'tests.engine._faults'],
    allow_failed_imports=False)
model = dict(type='ToyRegressor', nan_at={nan_at}, dropout={dropout})
train_dataloader = dict(
    batch_size={batch_size}, num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ToyRegressionDataset', length=16))
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs={max_epochs})
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=0.01))
param_scheduler = [dict(type='MultiStepLR', milestones=[2], by_epoch=True)]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='{ckpt_hook}', interval=1, max_keep_ckpts={max_keep}),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    divergence_guard=dict(type='DivergenceGuardHook'),
    reseed=dict(type='EpochReseedHook'))
custom_hooks = {custom_hooks}
randomness = dict(seed=0, deterministic=True)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
log_processor = dict(by_epoch=True, window_size=1)
'''


def write_toy_config(path: Path, max_epochs: int = 3, batch_size: int = 2,
                     ckpt_hook: str = 'AtomicCheckpointHook', max_keep: int = -1,
                     nan_at: int = 0, custom_hooks: str = '[]', dropout: float = 0.3) -> Path:
    path.write_text(TOY_CONFIG.format(max_epochs=max_epochs, batch_size=batch_size,
                                      ckpt_hook=ckpt_hook, max_keep=max_keep, nan_at=nan_at,
                                      custom_hooks=custom_hooks, dropout=dropout))
    return path


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def dist_train_cmd(config: Path, work_dir: Path, nproc: int, *args: str) -> List[str]:
    return ['bash', str(REPO / 'tools/dist_train.sh'), str(config), str(nproc), '--work-dir',
            str(work_dir), *args]


def dist_env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = train_env(extra)
    env.update(PYTHON=PY, PORT=str(free_port()))
    return env


def read_losses(path: Path) -> List[Dict[str, float]]:
    import json
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
