"""Runner checkpoints load weights-only through our loaders, whatever happened to torch's
allow-list before; nothing else loads (local files, URLs, the hub cache), nothing is ever loaded
unsafely, and ``import mmdet_ddetr`` is all it takes."""
import argparse
import ast
import io
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import mmdet_ddetr  # noqa: F401  (switches the safe loaders on, as custom_imports does)
from mmdet_ddetr.engine import (CheckpointLoadError, runner_checkpoint_globals_allowed,
                                runner_checkpoint_safe_globals)
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import _load_checkpoint

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner_ckpt(toy_reference) -> Path:
    """A checkpoint written by a real mmengine Runner through tools/train.py (toy model):
    weights, optimizer and scheduler states, message hub logs, meta."""
    return toy_reference / 'epoch_1.pth'


@pytest.fixture
def clean_allow_list():
    """Start from torch's empty user allow-list and restore whatever was there afterwards."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(saved)


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


def test_runner_checkpoint_loads_weights_only(runner_ckpt, clean_allow_list):
    # the mmengine loader (what Runner.resume / load_from use) goes through our loader
    ckpt = _load_checkpoint(str(runner_ckpt), map_location='cpu')
    assert ckpt.keys() >= {'meta', 'state_dict', 'message_hub', 'optimizer',
                           'param_schedulers'}
    assert ckpt['meta']['epoch'] == 1
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer) and np.isfinite(buf.mean())
    assert buf.statistics('max') >= buf.statistics('min')  # the restored statistic methods
    # the allow-list is scoped to the load: torch's own default refuses the file afterwards
    assert torch.serialization.get_safe_globals() == []
    with pytest.raises(pickle.UnpicklingError):
        torch.load(runner_ckpt, map_location='cpu', weights_only=True)


def test_numpy_scalars_load():
    buf = io.BytesIO()
    torch.save({'best_score': np.float64(0.5), 'n': np.int64(3), 'flag': np.bool_(True),
                'arr': np.arange(4, dtype=np.float32)}, buf)
    buf.seek(0)
    with runner_checkpoint_globals_allowed():
        out = torch.load(buf, weights_only=True)
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
    ckpt = _load_checkpoint(str(old), map_location='cpu')
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'], HistoryBuffer)


def _remove_the_way_safe_globals_does(entries) -> None:
    """What ``with torch.serialization.safe_globals(entries): ...`` leaves behind: on exit it
    removes every entry it was given, also those that were allow-listed before (onedl-mmengine's
    ``_safe_torch_load`` wraps its loads in exactly this)."""
    with torch.serialization.safe_globals(list(entries)):
        pass


def test_loading_survives_other_code_removing_allow_list_entries(runner_ckpt, clean_allow_list):
    """Issue 14 item 2: another library's ``safe_globals`` block strips our entries."""
    ours = runner_checkpoint_safe_globals()
    user_entry = argparse.Namespace  # allow-listed by "the user" before anything else
    torch.serialization.add_safe_globals([user_entry, *ours])
    _remove_the_way_safe_globals_does(ours)
    left = set(torch.serialization.get_safe_globals())
    assert left == {user_entry}, 'the reproduction must strip our entries'
    ckpt = _load_checkpoint(str(runner_ckpt), map_location='cpu')
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    # our load restored the list exactly: the user's entry stays, ours are not re-added
    assert set(torch.serialization.get_safe_globals()) == {user_entry}
    # and entries that were present before our load stay after it
    torch.serialization.add_safe_globals([HistoryBuffer])
    _load_checkpoint(str(runner_ckpt), map_location='cpu')
    assert set(torch.serialization.get_safe_globals()) == {user_entry, HistoryBuffer}


def test_loading_after_onedl_safe_torch_load(runner_ckpt, clean_allow_list):
    """The same on the OneDL stack, through onedl-mmengine's own loader."""
    from mmengine.runner import checkpoint as mmengine_checkpoint
    if not hasattr(mmengine_checkpoint, '_safe_torch_load'):
        pytest.skip('OpenMMLab mmengine has no _safe_torch_load (onedl-mmengine only); the '
                    'mechanism is reproduced by the test above on every stack')
    torch.serialization.add_safe_globals(runner_checkpoint_safe_globals())
    mmengine_checkpoint._safe_torch_load(str(runner_ckpt), map_location='cpu')
    assert HistoryBuffer not in torch.serialization.get_safe_globals()
    ckpt = _load_checkpoint(str(runner_ckpt), map_location='cpu')
    assert ckpt['meta']['epoch'] == 1


class _Evil:

    def __reduce__(self):
        return (eval, ("print('arbitrary code')", ))


class _Getattr:

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


def test_arbitrary_code_is_refused_without_fallback_and_named(tmp_path, capfd):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    # onedl-mmengine's own local loader would retry with weights_only=False and run the code
    with pytest.raises(CheckpointLoadError, match='builtins.eval'):
        _load_checkpoint(str(path))
    assert 'arbitrary code' not in capfd.readouterr().out


def test_other_globals_are_named_in_the_error(tmp_path):
    path = tmp_path / 'namespace.pth'
    torch.save({'state_dict': {}, 'args': argparse.Namespace(lr=1)}, path)
    with pytest.raises(CheckpointLoadError, match=r'refuses: argparse\.Namespace\.'):
        _load_checkpoint(str(path))


def test_getattr_is_restricted_to_history_buffer_statistics(tmp_path):
    path = tmp_path / 'getattr.pth'
    torch.save({'x': _Getattr()}, path)
    with runner_checkpoint_globals_allowed(), pytest.raises(pickle.UnpicklingError,
                                                            match='only allows getattr'):
        torch.load(path, weights_only=True)


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


IMPORT_PROBE = '''
import torch
from mmengine.runner.checkpoint import CheckpointLoader
schemes = ('x.pth', 'https://h/x.pth', 'http://h/x.pth', 'torchvision://resnet50',
           'modelzoo://resnet50', 'open-mmlab://x', 'openmmlab://x', 'mmcls://x')
before = [CheckpointLoader._get_checkpoint_loader(s).__module__ for s in schemes]
safe = torch.serialization.get_safe_globals()
import mmdet_ddetr
after = [CheckpointLoader._get_checkpoint_loader(s).__module__ for s in schemes]
print(set(before), set(after), torch.serialization.get_safe_globals() == safe)
'''


def test_importing_the_package_makes_every_scheme_safe():
    """``import mmdet_ddetr`` (all a config's custom_imports needs) replaces mmengine's loader
    of every scheme by ours, and leaves torch's process-wide allow-list alone."""
    out = subprocess.run([sys.executable, '-c', IMPORT_PROBE], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["{'mmengine.runner.checkpoint'}",
                                  "{'mmdet_ddetr.engine.checkpoint_safety'}", 'True']


def test_every_config_imports_only_the_package():
    from mmengine.config import Config
    configs = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)
    assert len(configs) > 10
    for path in configs:
        imports = Config.fromfile(str(path), import_custom_modules=False).get(
            'custom_imports', {}).get('imports', [])
        assert imports == ['mmdet_ddetr'], path


def _torch_load_calls(tree: ast.AST):
    """``torch.load(...)`` / ``torch.serialization.load(...)`` / ``load(...)`` imported from
    torch, in one module."""
    local_names = {alias.asname or alias.name for node in ast.walk(tree)
                   if isinstance(node, ast.ImportFrom) and node.module in ('torch',
                                                                           'torch.serialization')
                   for alias in node.names if alias.name == 'load'}
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == 'load':
            owner = ast.unparse(func.value)
            if owner in ('torch', 'torch.serialization'):
                yield node
        elif isinstance(func, ast.Name) and func.id in local_names:
            yield node


def _loads_not_weights_only(tree: ast.AST):
    """The torch.load calls in ``tree`` that do not say ``weights_only=True`` literally."""
    for call in _torch_load_calls(tree):
        kw = {k.arg: k.value for k in call.keywords}  # `**kwargs` appears as key None
        value = kw.get('weights_only')
        if None in kw or not (isinstance(value, ast.Constant) and value.value is True):
            yield call


def test_no_code_of_ours_calls_torch_load_without_weights_only():
    """Every torch.load in the package, the tools, the configs and the tests says
    ``weights_only=True`` literally, so none can load with ``weights_only=False`` (nor with torch < 2.6's default)."""
    files = sorted(p for folder in ('mmdet_ddetr', 'tools', 'tests', 'configs')
                   for p in (REPO / folder).rglob('*.py'))
    trees = [(path, ast.parse(path.read_text(), str(path))) for path in files]
    # The scan must see the loads we know of (a scan that finds nothing proves nothing).
    seen = {str(path.relative_to(REPO)) for path, tree in trees if any(_torch_load_calls(tree))}
    assert {'mmdet_ddetr/engine/checkpoint_safety.py', 'mmdet_ddetr/converters/checkpoint_io.py',
            'tools/model_converters/check_official_parity.py'} <= seen, seen
    bad = [f'{path.relative_to(REPO)}:{call.lineno}: {ast.unparse(call)}'
           for path, tree in trees for call in _loads_not_weights_only(tree)]
    assert not bad, 'torch.load without a literal weights_only=True:\n' + '\n'.join(bad)


def test_the_scan_catches_what_it_must():
    code = ('import torch\nfrom torch import load as L\n'
            'torch.load(f, weights_only=False)\nL(f)\ntorch.serialization.load(f, **kw)\n'
            'torch.load(f, weights_only=True)\nflag = False\ntorch.load(f, weights_only=flag)\n')
    tree = ast.parse(code)
    assert [c.lineno for c in _torch_load_calls(tree)] == [3, 4, 5, 6, 8]
    assert [c.lineno for c in _loads_not_weights_only(tree)] == [3, 4, 5, 8]
