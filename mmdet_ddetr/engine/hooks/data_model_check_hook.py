"""Before iteration 1: the schedule trains at all, and the model has a logit for every class."""
from __future__ import annotations

from typing import Optional, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop
from mmdet.registry import HOOKS

__all__ = ['DataModelCheckHook']


def _model_num_classes(runner) -> Optional[int]:
    """``bbox_head.num_classes`` of the runner's model; None for a model without a head (e.g.
    the ONNX Runtime model of ``tools/test.py --backend onnxruntime``)."""
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    head = getattr(model, 'bbox_head', None)
    return getattr(head, 'num_classes', None)


def _dataset_classes(dataloader) -> Sequence[str]:
    return (getattr(dataloader.dataset, 'metainfo', None) or {}).get('classes') or ()


@HOOKS.register_module()
class DataModelCheckHook(Hook):
    """Fail before the first iteration on a schedule or a model that does not fit the data.

    * ``train_cfg.max_iters`` / ``max_epochs`` giving no training iteration: mmengine would
      end a "successful" run at once.
    * ``model.bbox_head.num_classes`` smaller than the dataset's classes: labels past the
      last logit fail with an ``IndexError`` at iteration 1 (or at evaluation).

    Config (``configs/_base_/default_runtime.py`` has it)::

        default_hooks = dict(data_check=dict(type='DataModelCheckHook'))
    """

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        if runner.max_iters <= 0:
            loop = runner.train_loop
            if not isinstance(loop, EpochBasedTrainLoop):
                key, value = 'max_iters', runner.max_iters
            elif loop.max_epochs > 0:
                raise ValueError(f'train_cfg.max_epochs={loop.max_epochs} but the training '
                                 'dataloader is empty: no iteration to run')
            else:
                key, value = 'max_epochs', loop.max_epochs
            raise ValueError(f'train_cfg.{key}={value}: training would run no iteration; set '
                             f'train_cfg.{key} to a positive number')
        self._check_num_classes(runner, runner.train_dataloader, 'train_dataloader')

    def before_test(self, runner) -> None:
        self._check_num_classes(runner, runner.test_dataloader, 'test_dataloader')

    @staticmethod
    def _check_num_classes(runner, dataloader, key: str) -> None:
        num_classes = _model_num_classes(runner)
        classes = _dataset_classes(dataloader)
        if num_classes is not None and num_classes < len(classes):
            listed = list(classes)[:8] + (['...'] if len(classes) > 8 else [])
            raise ValueError(
                f'model.bbox_head.num_classes={num_classes} but {key}.dataset has '
                f'{len(classes)} classes ({", ".join(listed)}); set '
                f'model.bbox_head.num_classes={len(classes)}')
