"""Every source of weights is loaded as safely as a local file: URLs (served here from
127.0.0.1), the hub cache, ``torchvision://`` names; crafted training state changes nothing
process-wide; damaged or foreign files get messages that name the cause, never an unsafe
suggestion."""
import functools
import http.server
import pickle
import threading
from pathlib import Path

import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

import mmdet_ddetr  # noqa: F401  (switches the safe loaders on)
from mmdet_ddetr.engine import CheckpointLoadError
from mmdet_ddetr.engine.checkpoint_safety import torchvision_model_url
from tests.engine._helpers import REPO, run, train_cmd, train_env, write_toy_config


class _WritesMarker:
    """Unpickling this runs code: it creates the file ``path``."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f'open({self.path!r}, "w").write("code ran")', ))


@pytest.fixture
def served(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/www``; yields (folder, base URL)."""
    www = tmp_path / 'www'
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def evil_url(served, tmp_path, monkeypatch):
    """(URL of a code-executing checkpoint, the marker file its code would create); torch's
    hub cache is redirected into tmp_path."""
    www, base = served
    marker = tmp_path / 'code_ran'
    torch.save({'state_dict': {}, 'payload': _WritesMarker(marker)}, www / 'evil.pth')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    return f'{base}/evil.pth', marker


def test_url_checkpoint_is_refused_and_runs_nothing(evil_url):
    url, marker = evil_url
    with pytest.raises(CheckpointLoadError, match=r'refuses: builtins\.exec'):
        _load_checkpoint(url, map_location='cpu')
    assert not marker.exists()
    # The downloaded copy in the hub cache is read the same way on the next load.
    cached = Path(torch.hub.get_dir()) / 'checkpoints' / 'evil.pth'
    assert cached.is_file()
    with pytest.raises(CheckpointLoadError, match='builtins.exec'):
        _load_checkpoint(url, map_location='cpu')
    assert not marker.exists()


def test_mmengine_own_http_loader_would_have_run_the_code(evil_url):
    """The bug guarded above: mmengine's stock loader for URLs executes the file."""
    from mmengine.runner.checkpoint import load_from_http
    url, marker = evil_url
    load_from_http(url, map_location='cpu')
    assert marker.read_text() == 'code ran'


def test_backbone_pretrained_url_is_refused(evil_url):
    """A backbone's ``init_cfg=dict(type='Pretrained', checkpoint=URL)``."""
    from mmdet.registry import MODELS
    url, marker = evil_url
    backbone = MODELS.build(dict(type='mmdet.ResNet', depth=18,
                                 init_cfg=dict(type='Pretrained', checkpoint=url)))
    with pytest.raises(CheckpointLoadError, match='builtins.exec'):
        backbone.init_weights()
    assert not marker.exists()


@pytest.mark.parametrize('how', ['test_checkpoint', 'load_from'])
def test_tools_refuse_a_url_checkpoint(evil_url, tmp_path, how):
    """``tools/test.py CFG URL`` and ``load_from=URL`` in ``tools/train.py``, real processes."""
    url, marker = evil_url
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=1)
    env = train_env({'TORCH_HOME': str(tmp_path / 'torch_home')})
    if how == 'test_checkpoint':
        cfg.write_text(cfg.read_text() + TOY_TEST_PART)
        cmd = [train_cmd(cfg, tmp_path / 'wd')[0], str(REPO / 'tools/test.py'), str(cfg), url,
               '--work-dir', str(tmp_path / 'wd')]
    else:
        cmd = train_cmd(cfg, tmp_path / 'wd', '--cfg-options', f'load_from={url}')
    proc = run(cmd, timeout=180, env=env, expect_ok=False)
    assert proc.returncode != 0
    assert 'CheckpointLoadError' in proc.stdout and 'builtins.exec' in proc.stdout
    assert not marker.exists()


TOY_TEST_PART = '''
test_dataloader = dict(batch_size=2, num_workers=0,
                       sampler=dict(type='DefaultSampler', shuffle=False),
                       collate_fn=dict(type='default_collate'),
                       dataset=dict(type='ToyRegressionDataset', length=4))
test_cfg = dict(type='TestLoop')
test_evaluator = dict(type='mmdet.CocoMetric')
'''


def test_torchvision_names_resolve_without_torchvision(tmp_path, monkeypatch):
    """``torchvision://resnet50`` (every COCO config) without torchvision installed: the name
    maps to the published URL, and a file of that name in the hub cache loads offline."""
    with pytest.raises(ImportError):
        import torchvision  # noqa: F401  (there is no CPU torchvision for this torch)
    assert torchvision_model_url('resnet50') == \
        'https://download.pytorch.org/models/resnet50-0676ba61.pth'
    assert torchvision_model_url('resnet101').endswith('/resnet101-63fe2227.pth')
    with pytest.raises(CheckpointLoadError, match='not a known torchvision model name'):
        torchvision_model_url('resnet5O')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    cache = Path(torch.hub.get_dir()) / 'checkpoints'
    cache.mkdir(parents=True)
    torch.save({'conv1.weight': torch.ones(1)}, cache / 'resnet18-f37072fd.pth')
    loaded = CheckpointLoader.load_checkpoint('torchvision://resnet18', map_location='cpu')
    assert torch.equal(loaded['conv1.weight'], torch.ones(1))


def _crafted_history_buffer(path: Path) -> None:
    """A Runner-checkpoint-like file whose HistoryBuffer maps 'mean' to HistoryBuffer.max."""
    buf = HistoryBuffer([1.0, 3.0], [1, 1])
    original = HistoryBuffer.__getstate__

    def crafted(self):
        state = dict(original(self))
        state['statistics_methods'] = {'mean': HistoryBuffer.max}
        return state

    HistoryBuffer.__getstate__ = crafted
    try:
        torch.save({'message_hub': {'log_scalars': {'train/loss': buf}}}, path)
    finally:
        HistoryBuffer.__getstate__ = original


def test_crafted_history_buffer_cannot_change_process_statistics(tmp_path):
    path = tmp_path / 'crafted.pth'
    _crafted_history_buffer(path)
    probe = HistoryBuffer([1.0, 3.0], [1, 1])
    assert probe.statistics('mean') == 2.0
    with pytest.raises(CheckpointLoadError, match="statistics map 'mean'"):
        _load_checkpoint(str(path), map_location='cpu')
    assert probe.statistics('mean') == 2.0
    assert HistoryBuffer([5.0, 7.0], [1, 1]).statistics('mean') == 6.0


def test_plain_allow_listing_of_history_buffer_is_the_bug(tmp_path):
    """Why the checked stand-in exists: allow-listing HistoryBuffer itself lets the file
    re-map 'mean' for every buffer of the process."""
    path = tmp_path / 'crafted.pth'
    _crafted_history_buffer(path)
    from mmdet_ddetr.engine.checkpoint_safety import _history_buffer_getattr, _numpy_globals
    saved = dict(HistoryBuffer._statistics_methods)
    try:
        with torch.serialization.safe_globals(
                [HistoryBuffer, (_history_buffer_getattr, 'builtins.getattr'),
                 *_numpy_globals()]):
            torch.load(path, weights_only=True)
        assert HistoryBuffer([1.0, 3.0], [1, 1]).statistics('mean') == 3.0  # max, not mean
    finally:
        HistoryBuffer._statistics_methods.clear()
        HistoryBuffer._statistics_methods.update(saved)


def test_genuine_history_buffer_loads_as_a_plain_history_buffer(tmp_path):
    path = tmp_path / 'hub.pth'
    torch.save({'buf': HistoryBuffer([1.0, 3.0], [1, 1])}, path)
    buf = _load_checkpoint(str(path), map_location='cpu')['buf']
    assert type(buf) is HistoryBuffer and buf.statistics('mean') == 2.0
    assert pickle.loads(pickle.dumps(buf)).mean() == 2.0


@pytest.mark.parametrize('content,kind', [
    (b'<!DOCTYPE html><html><body>404 Not Found</body></html>', 'an HTML page'),
    (b'\x00\x01garbage bytes that are no checkpoint at all', 'some other file'),
])
def test_foreign_bytes_are_not_a_pytorch_checkpoint(tmp_path, content, kind):
    path = tmp_path / 'model.pth'
    path.write_bytes(content)
    with pytest.raises(CheckpointLoadError, match='is not a PyTorch checkpoint') as info:
        _load_checkpoint(str(path), map_location='cpu')
    assert kind in str(info.value) and 'refuses' not in str(info.value)


def test_refused_pickle_names_the_globals_and_the_way_out(tmp_path):
    import argparse
    path = tmp_path / 'official.pth'
    torch.save({'model': {}, 'args': argparse.Namespace(lr=1)}, path)
    with pytest.raises(CheckpointLoadError) as info:
        _load_checkpoint(str(path), map_location='cpu')
    message = str(info.value)
    assert 'argparse.Namespace' in message
    assert 'source you trust' in message and 'ddetr_to_mmdet_ddetr.py' in message


def test_no_message_of_ours_suggests_unsafe_loading():
    """Nothing we ship -- code, messages, configs, docs -- tells anybody to load unsafely."""
    needle = 'weights_only=' + 'False'
    roots = ['mmdet_ddetr', 'tools', 'configs', 'docs', 'README.md']
    found = []
    for root in roots:
        path = REPO / root
        files = [path] if path.is_file() else path.rglob('*')
        for f in files:
            if f.is_file() and f.suffix in ('.py', '.md', '.sh', '.txt', '.yml'):
                if needle in f.read_text(errors='ignore'):
                    found.append(str(f.relative_to(REPO)))
    assert not found, f'{needle} appears in {found}'
