"""mmengine's Runner with a ``compile`` option that suits detection transformers, and weights
that must fit the model wherever results are produced.

Weights: mmengine loads checkpoints with ``strict=False`` and only logs what did not fit.
:class:`RegionalCompileRunner` tells the detector (:class:`~mmdet_ddetr.models.common.
WeightsFitMixin`) why it loads: ``tools/test.py`` and validation-only runs load strictly,
``--resume`` strictly and only files with training state, ``load_from`` for training partially
(reported, refused when almost nothing fits).

Compile:
mmengine's ``compile=True`` wraps the whole ``train_step`` in ``torch.compile``: data
preprocessing, the Hungarian matching (scipy), the losses, ``backward`` and the optimizer step are
traced too, which breaks the graph into dozens of pieces that recompile as batches change, and
puts the backbone and the transformer in one graph whose sizes are floor divisions of the image
size -- torch 2.13's inductor then fails SMCA's and DETR's training step (``ValueRangeError:
Invalid ranges [0:-1]`` on the encoder's attention weights). :class:`RegionalCompileRunner`
compiles what :func:`~mmdet_ddetr.engine.compile.compile_detector` compiles (backbone + neck,
transformer: one graph each, dynamic shapes) for training, validation and testing alike.
"""
import contextlib
from typing import Iterator, Optional

from mmengine.config import Config
from mmengine.model import is_model_wrapper
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..models.common.weights_fit import weights_loading_mode
from .checkpoint_safety import CheckpointLoadError
from .compile import compile_detector


class ResumeError(CheckpointLoadError):
    """``--resume`` was given a file that holds no training state."""


# mmengine's root registry, not mmdet's: tools build the runner before any default scope exists
# (the Runner sets it), and a name in mmdet's registry is then not found.
@RUNNERS.register_module()
class RegionalCompileRunner(Runner):
    """A :class:`mmengine.runner.Runner` whose ``compile`` config compiles the detector's
    ``extract_feat`` and ``forward_transformer`` instead of ``train_step``.

    ``compile=True`` uses :data:`~mmdet_ddetr.engine.compile.DEFAULT_COMPILE_CFG`
    (``dynamic=True``); a dict is passed to ``torch.compile`` on top of it (``backend``,
    ``mode``, ...). Validation and testing run the compiled functions too (mmengine's Runner
    compiles for training only).

    Loading: ``load_from`` in :meth:`train` fine-tunes (``'partial'``), :meth:`resume` needs
    the same model and a checkpoint with training state (``'resume'``), everything else --
    ``tools/test.py``, ``val`` -- loads strictly (see
    :mod:`mmdet_ddetr.models.common.weights_fit`).
    """

    _load_purpose: Optional[str] = None  # 'partial' while training, 'resume' while resuming

    @contextlib.contextmanager
    def _loading_for(self, purpose: str) -> Iterator[None]:
        previous, self._load_purpose = self._load_purpose, purpose
        try:
            yield
        finally:
            self._load_purpose = previous

    def train(self):
        with self._loading_for('partial'):
            return super().train()

    def resume(self, filename: str, *args, **kwargs) -> None:
        with self._loading_for('resume'):
            super().resume(filename, *args, **kwargs)

    def load_checkpoint(self, filename: str, *args, **kwargs) -> dict:
        """mmengine's ``load_checkpoint`` with the weights checked for the current purpose;
        when resuming, a checkpoint without training state is refused before mmengine reads
        its missing entries."""
        mode = self._load_purpose or 'strict'
        model = self.model.module if is_model_wrapper(self.model) else self.model
        with weights_loading_mode(model, mode, filename):
            checkpoint = super().load_checkpoint(filename, *args, **kwargs)
        meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
        if mode == 'resume' and not (isinstance(meta, dict) and 'epoch' in meta and 'iter' in meta
                                     and 'optimizer' in checkpoint):
            raise ResumeError(
                f'{filename} has no training state (epoch, iteration, optimizer): it is a '
                'weights-only file (converted or published). --resume continues an interrupted '
                'run from one of its own checkpoints; to start training from these weights use '
                f'load_from instead (tools/train.py CONFIG --cfg-options load_from={filename}).')
        return checkpoint

    def _maybe_compile(self, target: str) -> None:
        """Compile the detector's tensor core once, whatever ``target`` mmengine names."""
        compile_cfg = self.cfg.get('compile', None)
        if compile_cfg is None or compile_cfg is False:
            return
        if compile_cfg is True:
            compile_cfg = {}
        if not isinstance(compile_cfg, dict):
            raise TypeError(f'compile must be a bool or a dict of torch.compile arguments, got '
                            f'{type(compile_cfg).__name__}')
        compile_cfg = dict(compile_cfg)  # a plain dict, not the config's ConfigDict
        if compile_detector(self.model, compile_cfg):
            self.logger.info(f'extract_feat and forward_transformer compiled (torch.compile '
                             f'{compile_cfg}); the first iterations of each image-size class '
                             'and mode are slow.')

    def val(self) -> dict:
        self._maybe_compile('val_step')
        return super().val()

    def test(self) -> dict:
        self._maybe_compile('test_step')
        return super().test()


def request_compile(cfg: Config) -> None:
    """What ``--compile`` of tools/train.py and tools/test.py does to a config: ``compile=True``
    (a dict already there is kept) run by :class:`RegionalCompileRunner` unless the config
    names its own ``runner_type``."""
    if not cfg.get('compile'):
        cfg.compile = True
    cfg.setdefault('runner_type', 'RegionalCompileRunner')


__all__ = ['RegionalCompileRunner', 'ResumeError', 'request_compile']
