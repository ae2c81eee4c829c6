"""setup_distributed: what it changes in a config on a machine without CUDA, and its errors."""
import pytest
import torch
from mmengine.config import Config

import mmdet_ddetr.engine.distributed as distributed
from mmdet_ddetr.engine import CPUDistributedDataParallel, setup_distributed

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason='setup_distributed is a no-op with CUDA')


@pytest.fixture
def fake_init(monkeypatch):
    """Record init_process_group calls instead of starting a process group."""
    calls = []
    monkeypatch.setattr(distributed.torch_dist, 'is_initialized', lambda: False)
    monkeypatch.setattr(distributed.torch_dist, 'init_process_group',
                        lambda **kw: calls.append(kw))
    for k, v in dict(RANK='1', WORLD_SIZE='2', LOCAL_RANK='1', MASTER_ADDR='127.0.0.1',
                     MASTER_PORT='29500').items():
        monkeypatch.setenv(k, v)
    return calls


def test_none_launcher_changes_nothing():
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    setup_distributed(cfg, 'none')
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg


def test_pytorch_launcher_on_cpu(fake_init):
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl')), find_unused_parameters=True))
    setup_distributed(cfg, 'pytorch')
    assert fake_init == [dict(backend='gloo', init_method='env://', rank=1, world_size=2,
                              timeout=fake_init[0]['timeout'])]
    assert cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.model_wrapper_cfg == dict(type='CPUDistributedDataParallel',
                                         broadcast_buffers=False, find_unused_parameters=True)


def test_existing_wrapper_settings_are_kept(fake_init):
    cfg = Config(dict(model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                             detect_anomalous_params=True)))
    setup_distributed(cfg, 'pytorch')
    assert cfg.model_wrapper_cfg == dict(type='CPUDistributedDataParallel',
                                         detect_anomalous_params=True)
    cfg = Config(dict(model_wrapper_cfg=dict(type='MMFullyShardedDataParallel')))
    with pytest.raises(RuntimeError, match='not known to work without CUDA'):
        setup_distributed(cfg, 'pytorch')


def test_missing_launcher_environment_is_explained(fake_init, monkeypatch):
    monkeypatch.delenv('MASTER_ADDR')
    with pytest.raises(RuntimeError, match='MASTER_ADDR.*tools/dist_train.sh'):
        setup_distributed(Config(dict()), 'pytorch')
    with pytest.raises(RuntimeError, match='--launcher mpi is not supported'):
        setup_distributed(Config(dict()), 'mpi')


def test_slurm_environment(fake_init, monkeypatch):
    for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'):
        monkeypatch.delenv(k)
    monkeypatch.setenv('SLURM_PROCID', '3')
    monkeypatch.setenv('SLURM_NTASKS', '4')
    monkeypatch.setenv('SLURM_LOCALID', '1')
    monkeypatch.setenv('SLURM_NODELIST', 'nodeA,nodeB')
    monkeypatch.setattr(distributed.shutil, 'which', lambda name: None)  # no scontrol
    setup_distributed(Config(dict()), 'slurm')
    assert fake_init[0]['rank'] == 3 and fake_init[0]['world_size'] == 4
    import os
    assert os.environ['MASTER_ADDR'] == 'nodeA' and os.environ['LOCAL_RANK'] == '1'


def test_cpu_wrapper_drops_device_ids():
    # A 1-process gloo group is enough to build the wrapper.
    import torch.distributed as dist
    if dist.is_initialized():
        pytest.skip('a process group already exists')
    dist.init_process_group('gloo', init_method='tcp://127.0.0.1:0', rank=0, world_size=1)
    try:
        model = CPUDistributedDataParallel(torch.nn.Linear(2, 1), device_ids=[0])
        assert model.device_ids is None
    finally:
        dist.destroy_process_group()
