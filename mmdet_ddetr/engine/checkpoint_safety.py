"""Safe loading of MMEngine Runner checkpoints under ``torch.load(weights_only=True)``.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``: it unpickles with a restricted
unpickler that only rebuilds tensors, containers and primitive types plus whatever was explicitly
allow-listed. MMEngine 0.10.7 calls ``torch.load(filename, map_location=...)`` without the
argument, so resuming (``--resume``) and ``load_from`` fail on the checkpoints the Runner itself
writes, because those also carry the training-log state of the ``MessageHub``:

* ``mmengine.logging.HistoryBuffer`` objects (smoothed loss / lr / time logs),
* numpy arrays inside them (``numpy.ndarray`` rebuilt by ``numpy._core.multiarray._reconstruct``
  with a ``numpy.dtype``),
* numpy scalars (``numpy._core.multiarray.scalar``), e.g. a ``best_score`` metric,
* ``getattr(HistoryBuffer, 'mean')`` & co.: ``HistoryBuffer.__getstate__`` stores its statistic
  *methods*, which pickle writes as ``builtins.getattr(HistoryBuffer, <name>)``.

This module knows exactly those globals (found by saving Runner checkpoints and listing
``torch.serialization.get_unsafe_globals_in_checkpoint``) and allows them *for the duration of
each load* rather than turning ``weights_only`` off. ``builtins.getattr`` is the dangerous one --
a general ``getattr`` lets a malicious pickle reach arbitrary attributes -- so it is *not*
allowed; a restricted stand-in registered under the same name only resolves the statistic
methods of ``HistoryBuffer``.

Why per load and not once per process: torch's allow-list is one process-wide set that any
library may change. ``torch.serialization.safe_globals(...)`` removes every entry it was given
when it exits, even entries that were there before -- onedl-mmengine's ``_safe_torch_load`` does
exactly that around its loads (and then falls back to ``weights_only=False`` when the safe load
fails). :func:`runner_checkpoint_globals_allowed` adds only what is missing and removes only
that, so our loads work whatever happened before, and leave the allow-list as they found it.

:func:`use_safe_checkpoint_loader` makes MMEngine load local files with :func:`load_from_local`
(weights-only, the allow-list above, errors that name the cause and the fix). Nothing here runs
on import: the configs switch it on through ``custom_imports`` naming
``mmdet_ddetr.engine.safe_checkpoint_loading``. See ``docs/troubleshooting.md``.
"""
from __future__ import annotations

import contextlib
import inspect
import os.path as osp
import pickle
import zipfile
from typing import Any, Callable, Iterator, List, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = [
    'CheckpointLoadError', 'load_from_local', 'runner_checkpoint_globals_allowed',
    'runner_checkpoint_safe_globals', 'use_safe_checkpoint_loader'
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
    if obj is HistoryBuffer and isinstance(name, str) and not name.startswith('_'):
        attr = inspect.getattr_static(HistoryBuffer, name, None)
        if inspect.isfunction(attr):
            return attr
    raise pickle.UnpicklingError(
        f'Refusing getattr({obj!r}, {name!r}) while loading a checkpoint: mmdet_ddetr only '
        'allows getattr on HistoryBuffer statistic methods (what MMEngine Runner checkpoints '
        'contain). Load the file with torch.load(weights_only=False) only if you trust it.')


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
        HistoryBuffer,
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


def use_safe_checkpoint_loader() -> None:
    """Make MMEngine load local checkpoint files with :func:`load_from_local`. Idempotent.

    ``Runner.resume``, ``load_from`` and ``load_checkpoint`` read local files through the
    loader MMEngine registered for the '' (path) prefix: mmengine 0.10.7's calls ``torch.load``
    with torch's default (weights-only since torch 2.6, without the Runner-checkpoint globals),
    onedl-mmengine's retries with ``weights_only=False`` when that fails. Other prefixes
    (``torchvision://``, ``https://``, ...) keep MMEngine's loaders.
    """
    # force=True: MMEngine registered its own loader for the prefix already.
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)


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
    ``'Loads checkpoint by local backend'`` from it), with actionable errors.

    Args:
        filename: Path of the checkpoint file.
        map_location: Forwarded to ``torch.load``.

    Returns:
        The loaded object (a Runner checkpoint dict or a plain state dict).

    Raises:
        FileNotFoundError: The file does not exist.
        CheckpointLoadError: The file is truncated / not a torch checkpoint, or holds objects
            outside the allow-list.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(
            f'{filename} can not be found. Check the path given to --resume/load_from, or the '
            f'path written in <work_dir>/last_checkpoint.')
    try:
        with runner_checkpoint_globals_allowed():
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        extra = _unsafe_globals(filename)
        raise CheckpointLoadError(
            f'Checkpoint {filename} contains objects that safe loading (torch.load '
            f'weights_only=True) refuses{": " + ", ".join(extra) if extra else ""}. mmdet_ddetr '
            'allow-lists only what MMEngine Runner checkpoints contain. Fix: if the file comes '
            'from a source you trust, either convert it to a plain state dict '
            '(torch.save(torch.load(f, weights_only=False)["state_dict"], out)) or allow-list the '
            'named classes with torch.serialization.add_safe_globals([...]) before training. '
            'See docs/troubleshooting.md.') from exc
    except (RuntimeError, EOFError, OSError) as exc:
        if _looks_truncated(filename, exc):
            raise CheckpointLoadError(
                f'Checkpoint {filename} is incomplete or not a torch checkpoint '
                f'({type(exc).__name__}: {str(exc)[:90] or "file ends early"}). It was '
                'probably cut short by a crash/kill while it was being written by a tool that '
                'does not write atomically. Fix: delete it and resume from an earlier '
                'checkpoint (--resume <work_dir>/epoch_N.pth), or fix <work_dir>/last_checkpoint '
                'to name a complete file.') from exc
        raise


def _looks_truncated(filename: str, exc: BaseException) -> bool:
    """Whether a torch.load failure comes from a damaged/empty file rather than its content."""
    if isinstance(exc, EOFError):  # empty or cut inside the (legacy) pickle stream
        return True
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
