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

This module allow-lists exactly those globals (found by saving Runner checkpoints and listing
``torch.serialization.get_unsafe_globals_in_checkpoint``), rather than turning ``weights_only``
off. ``builtins.getattr`` is the dangerous one -- a general ``getattr`` lets a malicious pickle
reach arbitrary attributes -- so it is *not* allow-listed; a restricted stand-in registered under
the same name only resolves the statistic methods of ``HistoryBuffer``.

It also replaces MMEngine's local-file checkpoint loader by one that behaves identically but turns
the two failures users actually hit into actionable errors (a file holding other globals, and a
truncated file). See ``docs/troubleshooting.md``.
"""
from __future__ import annotations

import inspect
import os.path as osp
import pickle
import zipfile
from typing import Any, Callable, List, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

__all__ = [
    'allow_runner_checkpoint_globals', 'runner_checkpoint_safe_globals',
    'CheckpointLoadError', 'load_from_local'
]

SafeGlobal = Union[Callable, Tuple[Callable, str]]

_APPLIED = False

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


def allow_runner_checkpoint_globals() -> None:
    """Allow-list Runner-checkpoint globals and install the clearer local loader. Idempotent.

    Called on ``import mmdet_ddetr``. Process-wide by design: ``Runner.resume``/``load_checkpoint``
    call ``torch.load`` deep inside MMEngine, so a scoped context manager would have to wrap
    MMEngine itself. The allow-list only adds data-only types (numpy arrays/scalars/dtypes and
    ``HistoryBuffer``, whose state is a dict of those) and a getattr restricted to one class.
    """
    global _APPLIED
    if _APPLIED:
        return
    if not hasattr(torch.serialization, 'add_safe_globals'):
        # torch < 2.4: no weights_only default, nothing to allow-list.
        _APPLIED = True
        return
    torch.serialization.add_safe_globals(runner_checkpoint_safe_globals())
    # force=True: mmengine registered its own loader for the '' (local path) prefix already.
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
    _APPLIED = True


class CheckpointLoadError(RuntimeError):
    """A checkpoint could not be loaded; the message names the cause and the fix."""


def _unsafe_globals(filename: str) -> Sequence[str]:
    """List the globals in ``filename`` that weights-only loading rejects (best effort)."""
    try:
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
    """Load a local checkpoint with torch's default (weights-only) unpickler.

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
        return torch.load(filename, map_location=map_location)
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
