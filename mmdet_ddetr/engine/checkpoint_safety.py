"""Weights-only checkpoint loading for every scheme mmengine knows, with errors that name the fix.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``: a restricted unpickler that only
rebuilds tensors, containers, primitive types and what was explicitly allow-listed. mmengine
0.10.7 loads local files with that default and no allow-list, so the checkpoints its own Runner
writes fail (they also carry the ``MessageHub`` training logs); and it loads ``http(s)://``,
``torchvision://`` and ``open-mmlab://`` checkpoints (and the hub cache) through
``torch.hub.load_state_dict_from_url``, whose default turns weights-only loading off: a downloaded
file runs code. onedl-mmengine retries a failed safe load unsafely.

:func:`use_safe_checkpoint_loader` (run by ``import mmdet_ddetr``) registers our loaders for all
of those schemes in mmengine's ``CheckpointLoader``, which every mmengine/mmdet loading path
goes through (``load_from``, ``--resume``, ``tools/test.py``, ``init_detector``,
``DetInferencer``, a backbone's ``init_cfg=dict(type='Pretrained', ...)``). Each loads weights-only
with exactly what a Runner checkpoint contains allowed (found by saving Runner checkpoints and
listing ``torch.serialization.get_unsafe_globals_in_checkpoint``):

* ``mmengine.logging.HistoryBuffer`` (smoothed loss / lr / time logs), rebuilt through
  :class:`_CheckedHistoryBuffer`, which refuses a state that would re-map the statistic
  methods that ``HistoryBuffer`` keeps in one class-level dict for the whole process;
* numpy arrays, dtypes and scalars inside them (``numpy._core.multiarray._reconstruct`` & co.);
* ``getattr(HistoryBuffer, 'mean')`` & co., which ``HistoryBuffer.__getstate__`` pickles as
  ``builtins.getattr``: a general ``getattr`` would give a file any attribute of any allowed
  object, so a restricted stand-in is registered under that name instead.

The allow-list is added for the duration of each load (and only what is missing, removing only
that afterwards), not once per process: torch's list is one set that any library may change,
and ``torch.serialization.safe_globals(...)`` -- which onedl-mmengine uses around its loads --
removes its entries when it exits, even entries that were there before. Nothing here ever
loads unsafely. See ``docs/troubleshooting.md``.
"""
from __future__ import annotations

import contextlib
import inspect
import os
import os.path as osp
import pickle
import zipfile
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union
from urllib.parse import urlparse

import mmengine
import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = [
    'CheckpointLoadError', 'load_from_local', 'load_from_url', 'runner_checkpoint_globals_allowed',
    'runner_checkpoint_safe_globals', 'torchvision_model_url', 'use_safe_checkpoint_loader'
]

SafeGlobal = Union[Callable, Tuple[Callable, str]]

# Dtypes a HistoryBuffer / numpy scalar in a Runner checkpoint can have.
_NUMERIC_DTYPES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32',
                   'uint64', 'float16', 'float32', 'float64', 'longdouble', 'complex64',
                   'complex128')


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` inside the weights-only unpickler.

    Only resolves what ``HistoryBuffer.__getstate__`` pickles: a public method defined on
    ``HistoryBuffer`` (``min``/``max``/``current``/``mean`` or one added by
    ``HistoryBuffer.register_statistics``). Anything else is refused, so allow-listing it does
    not give a checkpoint a general attribute-access primitive.

    Args:
        obj: The object whose attribute the pickle asks for.
        name: The attribute name.

    Returns:
        The plain function ``HistoryBuffer.<name>``.

    Raises:
        pickle.UnpicklingError: For any other object or attribute.
    """
    # The name HistoryBuffer resolves to _CheckedHistoryBuffer inside our loads.
    if obj in (HistoryBuffer, _CheckedHistoryBuffer) and isinstance(name, str) \
            and not name.startswith('_'):
        attr = inspect.getattr_static(HistoryBuffer, name, None)
        if inspect.isfunction(attr):
            return attr
    raise pickle.UnpicklingError(
        f'Refusing getattr({obj!r}, {name!r}) while loading a checkpoint: mmdet_ddetr only '
        'allows getattr on HistoryBuffer statistic methods (what MMEngine Runner checkpoints '
        'contain).')


class _CheckedHistoryBuffer(HistoryBuffer):
    """What the allow-list rebuilds a pickled ``HistoryBuffer`` with.

    ``HistoryBuffer.__setstate__`` merges the pickled ``statistics_methods`` into
    ``HistoryBuffer._statistics_methods``, one dict shared by every buffer of the process: a
    crafted checkpoint could map ``'mean'`` to ``HistoryBuffer.max`` and change every logged
    average from then on. A genuine state only names each statistic method under its own name
    (``{'mean': HistoryBuffer.mean, ...}``); anything else is refused, and the class-level dict
    is never written beyond the defaults. The rebuilt object is a plain ``HistoryBuffer``.
    """

    def __setstate__(self, state: Dict[str, Any]) -> None:
        methods = state.pop('statistics_methods', {})
        for name, method in (methods.items() if isinstance(methods, dict) else [(None, None)]):
            if not (isinstance(name, str) and
                    inspect.getattr_static(HistoryBuffer, name, None) is method):
                raise pickle.UnpicklingError(
                    f'Refusing a HistoryBuffer whose statistics map {name!r} to {method!r}: a '
                    'Runner checkpoint maps each statistic to the method of the same name.')
        self._set_default_statistics()
        self.__dict__.update(state)
        self.__class__ = HistoryBuffer


def _numpy_globals() -> List[SafeGlobal]:
    """Numpy reconstructors under the module path of numpy 2.x and of numpy 1.x.

    The functions are taken from numpy's own ``__reduce__`` output so that this works whatever
    numpy module they live in; each one is registered under both spellings because a checkpoint
    written with numpy 1.x names ``numpy.core.multiarray.*`` and one written with numpy 2.x names
    ``numpy._core.multiarray.*``.
    """
    reconstruct = np.zeros(1).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    out: List[SafeGlobal] = [np.ndarray, np.dtype]
    # Unpickling a dtype BUILDs an instance of its concrete class (numpy>=1.25:
    # numpy.dtypes.Float64DType, ...), which must be allow-listed too. Only numeric and bool
    # dtypes: object/void/str dtypes are never in Runner checkpoints.
    for code in _NUMERIC_DTYPES:
        dtype_cls = type(np.dtype(code))
        if dtype_cls is not np.dtype:  # numpy<1.25 has no per-dtype classes
            out.append(dtype_cls)
    for fn, name in ((reconstruct, '_reconstruct'), (scalar, 'scalar')):
        for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
            out.append((fn, f'{module}.{name}'))
    return out


def runner_checkpoint_safe_globals() -> List[SafeGlobal]:
    """The globals an MMEngine Runner checkpoint legitimately contains.

    Returns:
        Entries for ``torch.serialization.add_safe_globals`` (callables or
        ``(callable, 'dotted.name')`` pairs).
    """
    return [
        (_CheckedHistoryBuffer, f'{HistoryBuffer.__module__}.{HistoryBuffer.__qualname__}'),
        (_history_buffer_getattr, 'builtins.getattr'),
        *_numpy_globals(),
    ]


@contextlib.contextmanager
def runner_checkpoint_globals_allowed() -> Iterator[None]:
    """Allow the Runner-checkpoint globals inside the ``with`` block, then restore the list.

    Adds the entries of :func:`runner_checkpoint_safe_globals` that torch's allow-list lacks
    right now (whoever removed them) and, on exit, removes exactly those, so entries that were
    there before -- ours or anybody's -- stay.
    """
    present = set(torch.serialization.get_safe_globals())
    missing = [g for g in runner_checkpoint_safe_globals() if g not in present]
    with torch.serialization.safe_globals(missing):
        yield


class CheckpointLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message names the cause and the fix."""


def _unsafe_globals(filename: str) -> Sequence[str]:
    """List the globals in ``filename`` that weights-only loading with our allow-list rejects
    (best effort)."""
    try:
        with runner_checkpoint_globals_allowed():
            found = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception:  # noqa: BLE001 - only used to enrich an error message
        return []
    allowed = set()
    for entry in runner_checkpoint_safe_globals():
        if isinstance(entry, tuple):
            allowed.add(entry[1])
        else:
            allowed.add(f'{entry.__module__}.{entry.__qualname__}')
    return [g for g in found if g not in allowed]


def load_from_local(filename: str, map_location: Any = None) -> Any:
    """Load a local checkpoint with torch's weights-only unpickler and the Runner allow-list.

    Same contract as MMEngine's ``load_from_local`` (the name is kept because MMEngine logs
    ``'Loads checkpoint by local backend'`` from it), with errors that name the cause and the fix.

    Args:
        filename: Path of the checkpoint file.
        map_location: Forwarded to ``torch.load``.

    Returns:
        The loaded object (a Runner checkpoint dict or a plain state dict).

    Raises:
        FileNotFoundError: The file does not exist.
        CheckpointLoadError: The file is not a PyTorch checkpoint, is truncated, or holds
            objects outside the allow-list.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(
            f'{filename} can not be found. Check the path given to --resume/load_from, or the '
            f'path written in <work_dir>/last_checkpoint.')
    _check_is_torch_file(filename)
    try:
        with runner_checkpoint_globals_allowed():
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _unsafe_globals(filename)
        if not refused and _looks_truncated(filename, exc):
            raise _truncated(filename, exc) from exc
        raise CheckpointLoadError(
            f'Checkpoint {filename} contains objects that safe loading (weights-only) refuses'
            f'{": " + ", ".join(refused) if refused else f" ({_unpickler_reason(exc)})"}. '
            'mmdet_ddetr loads tensors, containers and what MMEngine Runner checkpoints contain, '
            'nothing that can run code. Obtain the file from a source you trust (its '
            'publisher\'s release page), or, for an official Deformable DETR / SMCA-DETR '
            'checkpoint, convert it with tools/model_converters/ddetr_to_mmdet_ddetr.py or '
            'smca_official_to_mmdet_ddetr.py (they read those files safely). See '
            'docs/troubleshooting.md.') from exc
    except (RuntimeError, EOFError, OSError) as exc:
        if _looks_truncated(filename, exc):
            raise _truncated(filename, exc) from exc
        raise


def _unpickler_reason(exc: BaseException) -> str:
    """The unpickler's own reason from torch's message, without torch's advice around it."""
    text = str(exc)
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1]
        text = text.split('Check the documentation of torch.load', 1)[0]
    return ' '.join(text.split())[:300]


def _check_is_torch_file(filename: str) -> None:
    """Refuse a file that is neither torch.save's zip format nor a legacy pickle."""
    with open(filename, 'rb') as f:
        head = f.read(64)
    if head[:4] == b'PK\x03\x04' or head[:1] == b'\x80' or not head:
        return  # zip (torch >= 1.6), a pickle (legacy format), or empty (reported as truncated)
    shown = head[:24].decode('utf-8', 'replace').strip()
    kind = 'an HTML page' if head.lstrip()[:1] == b'<' else 'some other file'
    raise CheckpointLoadError(
        f'{filename} is not a PyTorch checkpoint: it looks like {kind} (it starts with '
        f'{shown!r}). A download link that returned an error page, or a wrong path? Download '
        'the checkpoint again from its release page.')


def _truncated(filename: str, exc: BaseException) -> CheckpointLoadError:
    return CheckpointLoadError(
        f'Checkpoint {filename} is incomplete or not a torch checkpoint '
        f'({type(exc).__name__}: {str(exc)[:90] or "file ends early"}). It was '
        'probably cut short by a crash/kill while it was being written by a tool that '
        'does not write atomically. Fix: delete it and resume from an earlier '
        'checkpoint (--resume <work_dir>/epoch_N.pth), or fix <work_dir>/last_checkpoint '
        'to name a complete file.')


def _looks_truncated(filename: str, exc: BaseException) -> bool:
    """Whether a torch.load failure comes from a damaged/empty file rather than its content."""
    if isinstance(exc, EOFError) or 'ran out of input' in str(exc).lower():
        return True  # empty or cut inside the (legacy) pickle stream
    msg = str(exc)
    if 'PytorchStreamReader' in msg or 'central directory' in msg:
        return True
    # Depending on where the cut is, torch's zip reader may also fail with a bare OSError.
    # A file that starts like a zip (what torch.save writes) but has no intact zip trailer was
    # cut short; any other OSError (permissions, I/O) is re-raised unchanged.
    try:
        with open(filename, 'rb') as f:
            head = f.read(4)
        return head == b'PK\x03\x04' and not zipfile.is_zipfile(filename)
    except OSError:
        return False


# ------------------------------------------------------------------ remote schemes
def _download(url: str, model_dir: Optional[str], progress: bool) -> str:
    """The hub-cache path of ``url``, downloaded first if absent (as torch.hub names it).

    ``torch.hub.download_url_to_file`` writes to a temporary file and renames it, so the cache
    never holds a partial download; the hash prefix in the file name (``name-<sha256
    prefix>.pth``) is checked, as ``torch.hub`` does.
    """
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, osp.basename(urlparse(url).path))
    if not osp.exists(cached):
        match = torch.hub.HASH_REGEX.search(osp.basename(cached))
        print_log(f'Downloading {url} to {cached}', logger='current')
        torch.hub.download_url_to_file(url, cached, match.group(1) if match else None,
                                       progress=progress)
    return cached


def load_from_url(url: str, map_location: Any = None, model_dir: Optional[str] = None,
                  progress: bool = False) -> Any:
    """Download ``url`` into the hub cache (local rank 0 first when distributed) and load the
    cached file with :func:`load_from_local`: weights-only, the same allow-list and errors.

    Replaces MMEngine's ``load_from_http``, whose ``torch.hub.load_state_dict_from_url`` loads
    with weights-only loading turned off.
    """
    rank, world_size = get_dist_info()
    if rank == 0:
        path = _download(url, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            path = _download(url, model_dir, progress)
    return load_from_local(path, map_location)


def torchvision_model_url(name: str) -> str:
    """The published URL of ``torchvision://<name>``, without needing torchvision.

    MMEngine ships the torchvision model zoo's URLs (``mmengine/hub/torchvision_0.12.json``:
    ``resnet50``, ``resnet101``, ...); when torchvision is installed its newer weight names
    (``resnet50.imagenet1k_v2``, ...) are added through MMEngine, as its own loader does.
    """
    urls = mmengine.load(osp.join(mmengine.__path__[0], 'hub', 'torchvision_0.12.json'))
    if name not in urls:
        try:
            from mmengine.runner.checkpoint import get_torchvision_models
            urls.update(get_torchvision_models())
        except ImportError:  # no torchvision: the shipped names are all there is
            pass
    if name not in urls:
        raise CheckpointLoadError(
            f'torchvision://{name} is not a known torchvision model name (known without '
            f'torchvision: {", ".join(sorted(urls)[:12])}, ...). Check the spelling in the '
            'config\'s init_cfg, or give the checkpoint\'s https:// URL or a local path.')
    return urls[name]


def load_from_torchvision(filename: str, map_location: Any = None) -> Any:
    """``torchvision://NAME`` (and the deprecated ``modelzoo://NAME``) through
    :func:`load_from_url`."""
    return load_from_url(torchvision_model_url(filename.split('://', 1)[1]), map_location)


def load_from_openmmlab(filename: str, map_location: Any = None) -> Any:
    """``open-mmlab://NAME`` / ``openmmlab://NAME`` resolved with MMEngine's model list, then
    loaded like any URL or local file."""
    from mmengine.runner.checkpoint import (_get_mmengine_home, get_deprecated_model_names,
                                            get_external_models)
    name = filename.split('://', 1)[1]
    name = get_deprecated_model_names().get(name, name)
    urls = get_external_models()
    if name not in urls:
        raise CheckpointLoadError(f'{filename}: no OpenMMLab model is called {name!r}')
    url = urls[name]
    if url.startswith(('http://', 'https://')):
        return load_from_url(url, map_location)
    return load_from_local(osp.join(_get_mmengine_home(), url), map_location)


def load_from_mmcls(filename: str, map_location: Any = None) -> Any:
    """``mmcls://NAME`` resolved with MMEngine's list, loaded by :func:`load_from_url` and
    renamed as MMEngine does."""
    from mmengine.runner.checkpoint import _process_mmcls_checkpoint, get_mmcls_models
    urls = get_mmcls_models()
    name = filename.split('://', 1)[1]
    if name not in urls:
        raise CheckpointLoadError(f'{filename}: no mmcls model is called {name!r}')
    return _process_mmcls_checkpoint(load_from_url(urls[name], map_location))


#: Every scheme MMEngine loads with ``torch.load``, and our weights-only loader for it.
SAFE_LOADERS: Dict[Tuple[str, ...], Callable] = {
    ('', ): load_from_local,
    ('http://', 'https://'): load_from_url,
    ('modelzoo://', 'torchvision://'): load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
    ('mmcls://', ): load_from_mmcls,
}


def use_safe_checkpoint_loader() -> None:
    """Make MMEngine load every scheme of :data:`SAFE_LOADERS` weights-only. Idempotent.

    Run by ``import mmdet_ddetr``. ``pavi://`` and ``s3://`` (services this project does not
    use) keep MMEngine's loaders.
    """
    for prefixes, loader in SAFE_LOADERS.items():
        # force=True: MMEngine registered its own loaders for these prefixes already.
        CheckpointLoader.register_scheme(prefixes=list(prefixes), loader=loader, force=True)
