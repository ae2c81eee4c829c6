"""Distributed training on machines without CUDA (gloo), through MMEngine's Runner.

MMEngine 0.10.7 assumes GPUs when it starts a distributed run: its ``pytorch``/``slurm``
launchers call ``torch.cuda.set_device`` (which fails on a CPU build of torch) and its Runner
wraps the model in ``MMDistributedDataParallel(device_ids=[LOCAL_RANK])``, which torch rejects
for a CPU module. :func:`setup_distributed` fixes both without touching MMEngine, and is a no-op
when CUDA is available, so GPU runs take MMEngine's usual path (NCCL). ``tools/train.py`` calls
it before building the Runner.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from datetime import timedelta
from typing import Any, Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS

__all__ = ['CPUDistributedDataParallel', 'setup_distributed']

_TORCHRUN_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')


# Registered in MMEngine's root registry: Runner.wrap_model looks wrappers up there directly.
@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that also accepts a module living on the CPU.

    The Runner always passes ``device_ids=[LOCAL_RANK]``; torch's DDP only allows device ids
    for single-GPU modules, so they are dropped when the module's parameters are on the CPU.
    """

    def __init__(self, module: torch.nn.Module, device_ids: Optional[list] = None,
                 **kwargs: Any) -> None:
        first = next(module.parameters(), None)
        if first is not None and first.device.type == 'cpu':
            device_ids = None
            kwargs.pop('output_device', None)
        super().__init__(module=module, device_ids=device_ids, **kwargs)


def _first_slurm_host(node_list: str) -> str:
    """First hostname of a SLURM node list such as ``node[01-04]``."""
    if shutil.which('scontrol'):
        out = subprocess.run(['scontrol', 'show', 'hostnames', node_list],
                             capture_output=True, text=True, check=False).stdout.split()
        if out:
            return out[0]
    if '[' not in node_list:
        return node_list.split(',')[0]
    raise RuntimeError(
        f'Cannot expand SLURM_NODELIST={node_list!r} without `scontrol`: set MASTER_ADDR to '
        'the first node of the job.')


def _env_from_slurm(port: Optional[int]) -> None:
    """Fill in torchrun-style variables from SLURM's, as MMEngine's slurm launcher does."""
    env = os.environ
    env.setdefault('MASTER_ADDR', _first_slurm_host(env['SLURM_NODELIST']))
    env.setdefault('MASTER_PORT', str(port or 29500))
    env['WORLD_SIZE'] = env['SLURM_NTASKS']
    env['RANK'] = env['SLURM_PROCID']
    env['LOCAL_RANK'] = env.get('SLURM_LOCALID', '0')


def setup_distributed(cfg: Config, launcher: str) -> None:
    """Prepare ``cfg`` (and the process group) for a distributed run without CUDA.

    With CUDA available, or ``launcher == 'none'``, nothing changes. Otherwise:

    * the default process group is initialised with the ``gloo`` backend from the
      launcher's environment (``torchrun`` variables, or SLURM's for ``launcher='slurm'``), so
      the Runner finds it initialised and skips MMEngine's CUDA-only initialisation;
    * ``env_cfg.dist_cfg.backend`` is set to ``'gloo'`` (NCCL needs GPUs);
    * the model wrapper becomes :class:`CPUDistributedDataParallel` (keeping any other wrapper
      settings such as ``find_unused_parameters``).

    Args:
        cfg: The training config; modified in place.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'`` (``tools/train.py
            --launcher``).

    Raises:
        RuntimeError: The launcher's environment variables are missing, or a config names a
            custom model wrapper that cannot run on CPU.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    if not torch_dist.is_initialized():
        if launcher == 'slurm':
            if 'SLURM_PROCID' not in os.environ:
                raise RuntimeError('--launcher slurm outside a SLURM job step: start it with '
                                   '`srun` (see tools/slurm_train.sh in mmdet) or use '
                                   '--launcher pytorch with torchrun.')
            _env_from_slurm(dist_cfg.get('port'))
        elif launcher != 'pytorch':
            raise RuntimeError(
                f'--launcher {launcher} is not supported without CUDA; use --launcher pytorch '
                '(tools/dist_train.sh / torchrun) or --launcher slurm.')
        missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
        if missing:
            raise RuntimeError(
                f'--launcher {launcher} needs the environment variables {", ".join(missing)}: '
                'start training with `bash tools/dist_train.sh CONFIG NUM_PROCS` (torchrun '
                'sets them), not with plain `python tools/train.py --launcher pytorch`.')
        timeout = dist_cfg.get('timeout', 1800)
        torch_dist.init_process_group(
            backend='gloo', init_method='env://', rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']), timeout=timedelta(seconds=timeout))
    dist_cfg['backend'] = 'gloo'

    wrapper = cfg.get('model_wrapper_cfg', None)
    if wrapper is None:
        cfg.model_wrapper_cfg = dict(
            type='CPUDistributedDataParallel',
            broadcast_buffers=False,  # MMEngine's default wrapper settings
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    elif wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        wrapper['type'] = 'CPUDistributedDataParallel'
    elif wrapper.get('type') != 'CPUDistributedDataParallel':
        raise RuntimeError(
            f'model_wrapper_cfg.type={wrapper.get("type")!r} is not known to work without '
            'CUDA; remove model_wrapper_cfg or use type="CPUDistributedDataParallel".')
