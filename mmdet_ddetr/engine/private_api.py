"""Every private MMEngine API (underscore name) that our engine overrides or calls, in one place.

Everything else our runner and hooks use is MMEngine's public API (``Runner.train/val/test``,
``Runner.resume``, ``Runner.load_checkpoint``, ``Runner.save_checkpoint``, ``runner.cfg``,
``runner.message_hub``, ``CheckpointHook``'s public attributes). What is left has no public
equivalent:

============================================  ================================  ===============
MMEngine API                                  used by                           why
============================================  ================================  ===============
``Runner._maybe_compile(target)``             ``RegionalCompileRunner``         (1)
                                              (overrides)
``CheckpointHook._save_checkpoint_with_step`` ``AtomicCheckpointHook``          (2)
                                              (overrides)
``CheckpointHook._save_best_checkpoint``      ``AtomicCheckpointHook`` (wraps)  (3)
``HistoryBuffer._set_default_statistics``     ``checkpoint_safety``             (4)
                                              (``_CheckedHistoryBuffer`` calls)
============================================  ================================  ===============

1. ``Runner.train`` reads the config's ``compile`` and compiles the whole ``train_step`` through
   this method, between loading the weights and running the loop; overriding it is the only way
   to compile the detector's tensor core instead while keeping the ``compile`` key
   (:mod:`mmdet_ddetr.engine.runner`).
2. Where ``CheckpointHook`` writes a checkpoint and its bookkeeping (``last_checkpoint``, the
   kept checkpoints); re-implemented in crash-safe order.
3. Where ``CheckpointHook`` writes the best checkpoint; wrapped so that the write goes through
   a temporary name.
4. Restores ``HistoryBuffer``'s default statistics when a checkpoint's message hub is
   unpickled without letting the pickle write ``HistoryBuffer._statistics_methods`` (a
   class-level dict; read, never written, by our loader).

``tests/engine/test_private_api.py`` checks that each signature below is still MMEngine's and
that no other method of our runner and hooks overrides a private MMEngine method;
``tests/engine/test_mmengine_contract.py`` pins the sources of (2) and (3), which
``AtomicCheckpointHook`` re-implements.
"""
import importlib
from typing import Callable, NamedTuple


class PrivateAPI(NamedTuple):
    """One private MMEngine function we depend on.

    Attributes:
        owner: Dotted path of the MMEngine class, e.g. ``'mmengine.runner.Runner'``.
        name: The method's name.
        signature: ``str(inspect.signature(...))`` of the MMEngine version we support
            (mmengine 0.10.7; onedl-mmengine 0.10.12 is identical).
        used_by: Our class and how it uses the method.
    """

    owner: str
    name: str
    signature: str
    used_by: str

    def resolve(self) -> Callable:
        """The MMEngine function itself."""
        module, cls = self.owner.rsplit('.', 1)
        return getattr(getattr(importlib.import_module(module), cls), self.name)


PRIVATE_APIS = (
    PrivateAPI('mmengine.runner.Runner', '_maybe_compile', '(self, target: str) -> None',
               'RegionalCompileRunner overrides it'),
    PrivateAPI('mmengine.hooks.CheckpointHook', '_save_checkpoint_with_step',
               '(self, runner, step, meta)', 'AtomicCheckpointHook overrides it'),
    PrivateAPI('mmengine.hooks.CheckpointHook', '_save_best_checkpoint',
               '(self, runner, metrics) -> None', 'AtomicCheckpointHook wraps it'),
    PrivateAPI('mmengine.logging.HistoryBuffer', '_set_default_statistics', '(self) -> None',
               'checkpoint_safety._CheckedHistoryBuffer calls it'),
)

__all__ = ['PrivateAPI', 'PRIVATE_APIS']
