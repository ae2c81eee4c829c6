"""mmdet's Hungarian matching with the cost matrix checked before scipy sees it."""
import contextlib
from typing import Iterator

import numpy as np
from mmdet.models.task_modules.assigners import hungarian_assigner
from mmdet.models.task_modules.assigners.hungarian_assigner import HungarianAssigner
from mmdet.registry import TASK_UTILS

__all__ = ['FiniteCostHungarianAssigner', 'NonFiniteCostError']


class NonFiniteCostError(FloatingPointError):
    """The matching costs hold a NaN/inf: the predictions of this iteration diverged."""


def _finite_linear_sum_assignment(cost):
    """scipy's ``linear_sum_assignment`` on a cost matrix known to be finite."""
    values = np.asarray(cost)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise NonFiniteCostError(
            f'Hungarian matching received {bad} non-finite costs of {values.size} '
            f'({values.shape[0]} predictions x {values.shape[1]} targets): the model\'s '
            'predictions are NaN/inf, i.e. training diverged (or the loaded weights hold '
            'NaN/inf). Lower the learning rate, keep gradient clipping on, and resume from a '
            'good checkpoint; see docs/troubleshooting.md.')
    return _scipy_linear_sum_assignment(cost)


_scipy_linear_sum_assignment = hungarian_assigner.linear_sum_assignment


@contextlib.contextmanager
def _checked_matching() -> Iterator[None]:
    # mmdet's assign() moves the cost to the host (its own sync) and calls the module-level
    # name; checking there costs no extra GPU synchronisation and copies none of mmdet's code.
    hungarian_assigner.linear_sum_assignment = _finite_linear_sum_assignment
    try:
        yield
    finally:
        hungarian_assigner.linear_sum_assignment = _scipy_linear_sum_assignment


@TASK_UTILS.register_module()
class FiniteCostHungarianAssigner(HungarianAssigner):
    """:class:`mmdet.models.task_modules.HungarianAssigner` that raises
    :class:`NonFiniteCostError` (what diverged and what to do) instead of scipy's "matrix
    contains invalid numeric entries" when a cost is NaN/inf. Same arguments and results."""

    def assign(self, *args, **kwargs):
        with _checked_matching():
            return super().assign(*args, **kwargs)
