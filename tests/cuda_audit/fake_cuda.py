"""Fake CUDA on a CPU-only torch: real CPU numbers behind tensors that say ``cuda:0``.

What was tried (torch 2.13 CPU build) and what this module therefore does:

* ``FakeTensorMode`` with fakes on ``cuda:0`` runs shape propagation, but stops at every value
  the host needs (``.item()``, scipy's Hungarian matching) and, like any tensor on a ``cuda``
  device, cannot record an autograd graph: autograd asks the (absent) CUDA device guard for a
  stream and the process aborts. So it cannot run a training step.
* A wrapper subclass (:class:`FakeCudaTensor`) that holds a real CPU tensor and is made with
  ``device=cuda:0`` carries the CUDA dispatch keys: CUDA autocast (entered with
  ``torch.set_autocast_enabled('cuda', True)``; ``torch.autocast('cuda')`` refuses on a CPU
  build) casts exactly as on a GPU, and the numbers are real (matching, ``.item()`` work). Same
  autograd limit: it runs the loss forward and predict under ``no_grad`` only.
* For the backward, :class:`CpuKeyedFakeCudaTensor` is a CPU tensor to the dispatcher and to
  autograd and ``cuda:0`` to Python (``.device``, ``.is_cuda``): every tensor our code makes
  ``device=x.device`` is asked for on CUDA, the graph runs on the CPU engine. Autocast there is
  CPU autocast (the stand-in; ``torch.autocast('cuda', ...)`` inside the model is redirected to
  the CPU) and is not used for the dtype policy.

Both run under :class:`FakeCudaMode`, a ``TorchDispatchMode`` that sees every ATen op, runs it
on the CPU tensors and records: tensors created on the CPU, CPU tensors moved or mixed into
CUDA ones, device-to-host reads (syncs), the ops of our ``mmdet_ddetr::`` namespace (called
through their registered CUDA kernel, i.e. the dispatch to mmcv), and the calls into mmcv's
``_ext.ms_deform_attn_forward/backward``, replaced by :class:`RecordingExt` (records the
arguments, computes with mmcv's PyTorch reference).
"""
import contextlib
from concurrent.futures import ThreadPoolExecutor
import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map

CUDA = torch.device('cuda', 0)
_REPO = Path(__file__).resolve().parents[2]
_OURS = str(_REPO / 'mmdet_ddetr') + '/'
_TORCH = str(Path(torch.__file__).parent) + '/'
_HERE = str(Path(__file__).parent) + '/'
_SITE = str(Path(torch.__file__).parents[1]) + '/'
_TAG_SYNC = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)
aten = torch.ops.aten


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor (``elem``) presented as a ``cuda:0`` tensor with CUDA dispatch keys."""
    _impl_device = CUDA
    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        r = torch.Tensor._make_wrapper_subclass(
            cls, elem.shape, strides=elem.stride(), storage_offset=elem.storage_offset(),
            dtype=elem.dtype, layout=elem.layout, device=cls._impl_device,
            requires_grad=elem.requires_grad)
        r.elem = elem
        return r

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        # Reached with no mode on the stack (e.g. from inside the mode's own handler).
        if FakeCudaMode.current is None:
            raise RuntimeError(f'fake CUDA tensor used outside FakeCudaMode ({func})')
        with FakeCudaMode.current:
            return func(*args, **(kwargs or {}))

    def __repr__(self, **kwargs):  # noqa: D105
        return f'{type(self).__name__}({self.elem!r})'


class CpuKeyedFakeCudaTensor(FakeCudaTensor):
    """CPU to the dispatcher and autograd, ``cuda:0`` to Python code."""
    _impl_device = torch.device('cpu')

    @property
    def device(self):
        return CUDA

    @property
    def is_cuda(self):
        return True

    def get_device(self):
        return 0

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False, **kwargs):
        # A CPU tensor's new_tensor would make a CPU tensor; a CUDA one's makes it on CUDA.
        return torch.tensor(data, dtype=dtype or self.dtype, device=device or CUDA,
                            requires_grad=requires_grad)

    # A CPU tensor's .cpu() / .tolist() / .numpy() / .to('cpu') never reach the dispatcher:
    # these are what would copy a CUDA tensor to the host, so they are recorded here.
    def _to_host(self, what: str) -> torch.Tensor:
        if FakeCudaMode.current is not None:
            FakeCudaMode.current.record('sync', what, dtype=self.dtype, shape=tuple(self.shape))
        return self.elem

    def cpu(self, *args, **kwargs):
        return self._to_host('Tensor.cpu').cpu(*args, **kwargs)

    def tolist(self):
        return self._to_host('Tensor.tolist').tolist()

    def numpy(self, *args, **kwargs):
        return self._to_host('Tensor.numpy').numpy(*args, **kwargs)

    def __array__(self, dtype=None, copy=None):
        return self._to_host('numpy.asarray').numpy().__array__(dtype)

    def to(self, *args, **kwargs):
        target = kwargs.get('device')
        for a in args:
            if isinstance(a, (str, torch.device)):
                target = a
            elif isinstance(a, torch.Tensor):
                target = a.device
        if target is not None and torch.device(target).type == 'cpu':
            return self._to_host('Tensor.to(cpu)').to(*args, **kwargs)
        return super().to(*args, **kwargs)


@dataclass
class Event:
    kind: str          # see FakeCudaMode
    op: str
    site: str          # nearest frame outside torch and this folder: 'path:line'
    ours: str          # nearest frame in mmdet_ddetr ('' if none)
    chain: Tuple[str, ...]  # qualnames of the non-torch frames, innermost first
    detail: Dict[str, Any] = field(default_factory=dict)

    def __str__(self):
        return f'{self.kind} {self.op} at {self.ours or self.site} {self.detail}'


def _short(path: str) -> str:
    # site-packages first: the README's install puts the venv inside the repository.
    for root in (_SITE, str(_REPO) + '/'):
        if path.startswith(root):
            return path[len(root):]
    return path


def _site() -> Tuple[str, str, Tuple[str, ...]]:
    f = sys._getframe(2)
    site = ours = ''
    chain = []
    while f is not None:
        name = f.f_code.co_filename
        if not name.startswith(_TORCH) and not name.startswith(_HERE):
            chain.append(f.f_code.co_qualname)
            where = f'{_short(name)}:{f.f_lineno}'
            site = site or where
            if not ours and name.startswith(_OURS):
                ours = where
        f = f.f_back
    return site, ours, tuple(chain)


def describe(t: Any) -> Any:
    """What a kernel sees of an argument: dtype, shape, device, contiguity."""
    if isinstance(t, torch.Tensor):
        return dict(dtype=t.dtype, shape=tuple(t.shape), device=t.device,
                    contiguous=t.is_contiguous())
    return t


def _syncs(func, flat) -> bool:
    """Does this op make the host wait for the device? Ops whose result or output shape
    depends on the data do, except indexing with integer (not boolean) index tensors."""
    if not any(tag in func.tags for tag in _TAG_SYNC):
        return False
    if func in (aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
                aten._index_put_impl_.default):
        return any(isinstance(t, torch.Tensor) and t.dtype in (torch.bool, torch.uint8)
                   for t in flat[1:])
    return True


def unwrap(x):
    return x.elem if isinstance(x, FakeCudaTensor) else x


class FakeCudaMode(TorchDispatchMode):
    """Runs every op on the CPU tensors behind fake CUDA ones, recording in :attr:`events`:

    * ``cpu_created``: a factory op (no tensor argument) made a CPU tensor;
    * ``moved``: a CPU tensor was copied to CUDA (``upload`` instead when it was fresh host
      data, ``torch.tensor(data, device=...)``: that is how such data reaches a GPU);
    * ``mixed``: one op took CUDA and (non-scalar) CPU tensors;
    * ``cpu_compute``: an op computed on CPU tensors only;
    * ``sync``: a device-to-host read (``.item()``, ``bool()``, ``.cpu()``, ``.tolist()``,
      ``nonzero``, boolean indexing: ops tagged data-dependent or with data-dependent shapes);
    * ``op``: a call of an ``mmdet_ddetr::`` operator (its arguments);
    * ``float_op``: (only with ``record_dtypes``) the floating input dtypes of each ATen op.

    Events are recorded only while :attr:`recording` is set.
    """
    current: Optional['FakeCudaMode'] = None

    def __init__(self, wrapper=FakeCudaTensor, record_dtypes: bool = False):
        super().__init__()
        self.wrapper = wrapper
        self.events: List[Event] = []
        self.recording = False
        self.record_dtypes = record_dtypes
        self._fresh: Dict[int, Any] = {}

    def wrap(self, t):
        if isinstance(t, torch.Tensor) and not isinstance(t, FakeCudaTensor):
            return self.wrapper(t)
        return t

    def record(self, kind: str, op: str, **detail) -> None:
        if self.recording:
            site, ours, chain = _site()
            self.events.append(Event(kind, op, site, ours, chain, detail))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = str(func)
        flat, _ = tree_flatten((args, kwargs))
        fakes = [t for t in flat if isinstance(t, FakeCudaTensor)]
        plain = [t for t in flat if isinstance(t, torch.Tensor)
                 and not isinstance(t, FakeCudaTensor)]
        if func.namespace == 'mmdet_ddetr':
            self.record('op', name, args=[describe(a) for a in args])
            if fakes:  # what a GPU would run: the op's CUDA kernel (our dispatch to mmcv)
                with self:
                    return func.redispatch(torch._C.DispatchKeySet(torch._C.DispatchKey.CUDA),
                                           *args, **kwargs)
        device = kwargs.get('device')
        target = torch.device(device) if device is not None else None
        if target is not None and target.type == 'cuda':
            kwargs['device'] = torch.device('cpu')
        # A CPU-keyed tensor's own dtype casts carry device=cpu; its host copies are caught in
        # Python (CpuKeyedFakeCudaTensor.cpu & co.).
        to_host = target is not None and target.type == 'cpu' and bool(fakes) and \
            not issubclass(self.wrapper, CpuKeyedFakeCudaTensor)
        if fakes and (_syncs(func, flat) or to_host):
            self.record('sync', name, dtype=fakes[0].dtype, shape=tuple(fakes[0].shape))
        elif func in (aten._to_copy.default, aten.copy_.default) and plain and \
                (target is not None and target.type == 'cuda' or fakes):
            source = plain[0] if func is aten._to_copy.default else args[1]
            if isinstance(source, torch.Tensor) and not isinstance(source, FakeCudaTensor):
                fresh = self._fresh.pop(id(source), None) is source
                self.record('upload' if fresh else 'moved', name, shape=tuple(source.shape))
        elif fakes and any(t.dim() > 0 and t.numel() > 0 for t in plain):
            self.record('mixed', name, cpu_shapes=[tuple(t.shape) for t in plain])
        if self.record_dtypes and self.recording and fakes:
            floats = [t.dtype for t in fakes if t.is_floating_point()]
            if floats:
                self.record('float_op', name, dtypes=tuple(floats))
        out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
        if func is aten.lift_fresh.default:
            self._fresh[id(out)] = out
        if (fakes and not to_host) or (target is not None and target.type == 'cuda'):
            # in-place ops return their (fake) argument itself, everything else a new tensor
            same = {id(t.elem): t for t in fakes}
            return tree_map(lambda o: same[id(o)] if id(o) in same else self.wrap(o), out)
        return out

    def __enter__(self):
        self._outer = FakeCudaMode.current
        FakeCudaMode.current = self
        return super().__enter__()

    def __exit__(self, *exc):
        FakeCudaMode.current = self._outer
        return super().__exit__(*exc)

    def of(self, kind: str) -> List[Event]:
        return [e for e in self.events if e.kind == kind]


_FACTORIES = {getattr(torch, n) for n in (
    'zeros', 'ones', 'empty', 'full', 'arange', 'linspace', 'logspace', 'eye', 'rand', 'randn',
    'randint', 'randperm', 'tensor', 'as_tensor', 'scalar_tensor', 'empty_strided',
    'from_numpy', 'meshgrid')}


class FactoryRecorder(torch.overrides.TorchFunctionMode):
    """Records, as ``cpu_created`` in ``mode.events``, each tensor that Python code asks torch
    to make on the CPU (``torch.zeros(n)``, ``torch.tensor(data)``, ``torch.arange(n)`` without
    a CUDA device) while the mode records. Kept at the Python level: ATen's own helpers inside
    an op make their tensors on the op's device, which a CPU-keyed tensor reports as CPU."""

    def __init__(self, mode: 'FakeCudaMode'):
        super().__init__()
        self.mode = mode

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _FACTORIES and self.mode.recording:
            made = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            if any(not isinstance(t, FakeCudaTensor) and t.device.type == 'cpu' for t in made):
                self.mode.record('cpu_created', f'torch.{func.__name__}')
        return out


# ------------------------------------------------------------------------ mmcv's _ext stand-in
@dataclass
class KernelCall:
    name: str
    args: Dict[str, Any]
    im2col_step: int
    site: str
    zero_buffers: Dict[str, bool] = field(default_factory=dict)


_FWD_NAMES = ('value', 'spatial_shapes', 'level_start_index', 'sampling_locations',
              'attention_weights')
_BWD_NAMES = _FWD_NAMES + ('grad_output', 'grad_value', 'grad_sampling_loc',
                           'grad_attn_weight')


def _reference(value, shapes, locations, weights):
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    return multi_scale_deformable_attn_pytorch(value.float(), shapes, locations.float(),
                                               weights.float())


@contextlib.contextmanager
def _plain_cpu() -> Iterator[None]:
    """No mode, no autocast: the stand-in's own arithmetic is not the audited code's."""
    with _disable_current_modes(), torch.autocast('cpu', enabled=False):
        prev = torch.is_autocast_enabled('cuda')
        torch.set_autocast_enabled('cuda', False)
        try:
            yield
        finally:
            torch.set_autocast_enabled('cuda', prev)


class RecordingExt:
    """Stands in for mmcv's compiled ``ms_deform_attn_forward`` / ``ms_deform_attn_backward``:
    records what each call passes, then computes the result with mmcv's PyTorch reference
    (float32) so that the step goes on with real numbers."""

    def __init__(self):
        self.calls: List[KernelCall] = []

    def ms_deform_attn_forward(self, *args, im2col_step):
        assert len(args) == 5, args
        site, _, _ = _site()
        self.calls.append(KernelCall('forward', dict(zip(_FWD_NAMES, map(describe, args))),
                                     im2col_step, site))
        value, shapes, _, locations, weights = map(unwrap, args)
        with _plain_cpu():
            out = _reference(value, shapes, locations, weights).to(value.dtype)
        return type(args[0])(out) if isinstance(args[0], FakeCudaTensor) else out

    def ms_deform_attn_backward(self, *args, im2col_step):
        assert len(args) == 9, args
        site, _, _ = _site()
        with _plain_cpu():
            zero = {n: bool((unwrap(a) == 0).all()) for n, a in zip(_BWD_NAMES[6:], args[6:])}
        self.calls.append(KernelCall('backward', dict(zip(_BWD_NAMES, map(describe, args))),
                                     im2col_step, site, zero))
        value, shapes, _, locations, weights, grad_out = map(unwrap, args[:6])

        def reference_grads():
            # A fresh thread: no dispatch mode, no autocast and autograd not excluded (the
            # kernel is called below autograd).
            inputs = [t.detach().float().requires_grad_() for t in (value, locations, weights)]
            out = _reference(inputs[0], shapes, inputs[1], inputs[2])
            return torch.autograd.grad(out, inputs, grad_out.float())

        with ThreadPoolExecutor(1) as pool:
            grads = pool.submit(reference_grads).result()
        with _plain_cpu():
            for buffer, grad in zip(args[6:], grads):
                unwrap(buffer).add_(grad.to(buffer.dtype))  # accumulates, as the kernel does

    def of(self, name: str) -> List[KernelCall]:
        return [c for c in self.calls if c.name == name]


@contextlib.contextmanager
def recording_ext(ext: Optional[RecordingExt] = None) -> Iterator[RecordingExt]:
    """Replace mmcv's two ``_ext`` functions (the module object our dispatch and mmcv's
    ``MultiScaleDeformableAttnFunction`` both call through) for the duration."""
    ext = ext or RecordingExt()
    module = importlib.import_module('mmcv._ext')
    saved = {n: getattr(module, n) for n in ('ms_deform_attn_forward', 'ms_deform_attn_backward')}
    module.ms_deform_attn_forward = ext.ms_deform_attn_forward
    module.ms_deform_attn_backward = ext.ms_deform_attn_backward
    try:
        yield ext
    finally:
        for n, f in saved.items():
            setattr(module, n, f)


# ------------------------------------------------------------------------------- environment
@contextlib.contextmanager
def cuda_allowed() -> Iterator[None]:
    """Let factory calls name ``device='cuda:0'`` on a CPU build (torch asks
    ``torch.cuda._lazy_init`` first; on a CPU build that raises). The mode then makes the tensor
    on the CPU. Side effect for the rest of the process: torch remembers CUDA as initialised,
    so a later real CUDA call fails with "Could not run ... 'CUDA' backend" instead of "Torch
    not compiled with CUDA enabled". On a machine with a GPU nothing is patched."""
    if torch.cuda.is_available():
        yield
        return
    saved = torch.cuda._lazy_init
    torch.cuda._lazy_init = lambda: None
    lift = torch._C._only_lift_cpu_tensors()
    # torch.tensor(data, device=cuda) then goes through the dispatcher (lift_fresh + _to_copy).
    torch._C._set_only_lift_cpu_tensors(True)
    try:
        yield
    finally:
        torch.cuda._lazy_init = saved
        torch._C._set_only_lift_cpu_tensors(lift)


@contextlib.contextmanager
def cuda_autocast(dtype: Optional[torch.dtype]) -> Iterator[None]:
    """CUDA autocast on a CPU build (``torch.autocast('cuda')`` disables itself there)."""
    prev = torch.is_autocast_enabled('cuda'), torch.get_autocast_dtype('cuda')
    torch.set_autocast_enabled('cuda', dtype is not None)
    if dtype is not None:
        torch.set_autocast_dtype('cuda', dtype)
    try:
        yield
    finally:
        torch.set_autocast_enabled('cuda', prev[0])
        torch.set_autocast_dtype('cuda', prev[1])


@contextlib.contextmanager
def cpu_autocast_for_cuda(dtype: Optional[torch.dtype]) -> Iterator[None]:
    """The stand-in for CPU-keyed tensors: CPU autocast, and ``torch.autocast('cuda', ...)``
    inside the model redirected to the CPU (the head's float32 loss region)."""
    original = torch.autocast

    def redirected(device_type, *args, **kwargs):
        return original('cpu' if device_type == 'cuda' else device_type, *args, **kwargs)

    torch.autocast = redirected
    try:
        with original('cpu', dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            yield
    finally:
        torch.autocast = original


def to_fake_cuda(model: torch.nn.Module, mode: FakeCudaMode, autograd: bool) -> None:
    """Parameters and buffers become fake CUDA tensors in place (with ``mode`` active)."""
    for module in model.modules():
        for name, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[name] = torch.nn.Parameter(
                    mode.wrapper(p.detach()), requires_grad=p.requires_grad and autograd)
        for name, b in list(module._buffers.items()):
            if b is not None:
                module._buffers[name] = mode.wrapper(b)


def batch_to_fake_cuda(data: Dict[str, Any], mode: FakeCudaMode) -> Dict[str, Any]:
    inputs = mode.wrapper(data['inputs'])
    for sample in data['data_samples']:
        for key, value in list(sample.gt_instances.items()):
            if isinstance(value, torch.Tensor):
                sample.gt_instances[key] = mode.wrapper(value)
    return dict(inputs=inputs, data_samples=data['data_samples'])


def flat_tensors(obj: Any) -> List[torch.Tensor]:
    from mmengine.structures import BaseDataElement
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, BaseDataElement):
        return [t for v in obj.values() for t in flat_tensors(v)]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in flat_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in flat_tensors(v)]
    return []


def all_finite(tensors: List[torch.Tensor]) -> bool:
    with _plain_cpu():
        return all(bool(torch.isfinite(unwrap(t)).all()) for t in tensors
                   if unwrap(t).is_floating_point())
