"""Runner checkpoints load under torch's default weights-only unpickler, and nothing else does."""
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdet_ddetr.engine import CheckpointLoadError, runner_checkpoint_safe_globals
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint


@pytest.fixture
def runner_ckpt(toy_reference) -> Path:
    """A checkpoint written by a real mmengine Runner through tools/train.py (toy model):
    weights, optimizer and scheduler states, message hub logs, meta."""
    return toy_reference / 'epoch_1.pth'


def _allowed_names():
    names = set()
    for entry in runner_checkpoint_safe_globals():
        if isinstance(entry, tuple):
            names.add(entry[1])
        else:
            names.add(f'{entry.__module__}.{entry.__qualname__}')
    return names


def unsafe_globals_without_allow_list(path) -> set:
    """What torch's default allow-list alone refuses in ``path``."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    finally:
        torch.serialization.add_safe_globals(saved)


def test_runner_checkpoint_needs_exactly_the_allow_list(runner_ckpt):
    found = unsafe_globals_without_allow_list(runner_ckpt)
    # What a Runner checkpoint contains beyond tensors and containers (found by saving one):
    assert {'mmengine.logging.history_buffer.HistoryBuffer', 'builtins.getattr',
            'numpy.ndarray', 'numpy.dtype'} <= found
    assert found <= _allowed_names(), f'not allow-listed: {found - _allowed_names()}'


def test_runner_checkpoint_loads_with_default_weights_only(runner_ckpt):
    ckpt = torch.load(runner_ckpt, map_location='cpu')  # default: weights_only=True
    ckpt2 = torch.load(runner_ckpt, map_location='cpu', weights_only=True)
    assert ckpt.keys() == ckpt2.keys() >= {'meta', 'state_dict', 'message_hub', 'optimizer',
                                          'param_schedulers'}
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer) and np.isfinite(buf.mean())
    assert buf.statistics('max') >= buf.statistics('min')  # the restored statistic methods
    # the mmengine loader (what Runner.resume / load_from use) goes through the same path
    assert _load_checkpoint(str(runner_ckpt), map_location='cpu')['meta']['epoch'] == 1


def test_numpy_scalars_load():
    buf = io.BytesIO()
    torch.save({'best_score': np.float64(0.5), 'n': np.int64(3), 'flag': np.bool_(True),
                'arr': np.arange(4, dtype=np.float32)}, buf)
    buf.seek(0)
    out = torch.load(buf)
    assert out['best_score'] == 0.5 and out['n'] == 3 and bool(out['flag'])
    assert out['arr'].dtype == np.float32


def _rewrite_pickle(src: Path, dst: Path, old: bytes, new: bytes) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, 'w', zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith('data.pkl'):
                assert old in data
                data = data.replace(old, new)
            zout.writestr(item, data)


def test_checkpoint_written_with_numpy1_module_names_loads(runner_ckpt, tmp_path):
    # numpy 1.x pickles its reconstructors as numpy.core.multiarray.*; numpy 2 as numpy._core.
    old = tmp_path / 'numpy1.pth'
    _rewrite_pickle(runner_ckpt, old, b'numpy._core.multiarray', b'numpy.core.multiarray')
    assert 'numpy.core.multiarray._reconstruct' in unsafe_globals_without_allow_list(old)
    ckpt = torch.load(old, map_location='cpu')
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'], HistoryBuffer)


class _Evil:

    def __reduce__(self):
        return (eval, ("print('arbitrary code')", ))


class _Getattr:

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


def test_arbitrary_code_is_still_refused(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    with pytest.raises(CheckpointLoadError, match='builtins.eval'):
        _load_checkpoint(str(path))


def test_getattr_is_restricted_to_history_buffer_statistics(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': _Getattr()}, path)
    with pytest.raises(pickle.UnpicklingError, match='only allows getattr'):
        torch.load(path)


def test_truncated_and_missing_checkpoints_give_actionable_errors(runner_ckpt, tmp_path):
    data = runner_ckpt.read_bytes()
    for name, content in (('cut.pth', data[:len(data) // 2]), ('empty.pth', b'')):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointLoadError, match='incomplete') as info:
            _load_checkpoint(str(tmp_path / name))
        assert 'resume from an earlier' in str(info.value)
    with pytest.raises(FileNotFoundError, match='last_checkpoint'):
        _load_checkpoint(str(tmp_path / 'missing.pth'))


def test_hooks_are_registered():
    from mmdet.registry import HOOKS
    for name in ('AtomicCheckpointHook', 'FiniteLossHook', 'EpochReseedHook'):
        assert HOOKS.get(name) is not None, name
