"""Read mmengine's scalar logs (``<work_dir>/<timestamp>/vis_data/scalars.json``).

mmengine's ``LocalVisBackend`` appends one JSON object per logging event: training events
carry ``epoch``, ``iter`` (global iteration, also in ``step``), ``lr`` and the losses; validation
events carry the metrics (``coco/bbox_mAP`` ...) with ``step`` = the epoch just evaluated (for
epoch-based loops).
"""
import glob
import json
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List


@dataclass
class ScalarLog:
    """The events of one scalars.json, split into training and validation events."""

    path: str
    train: List[Dict] = field(default_factory=list)
    val: List[Dict] = field(default_factory=list)

    def series(self, key: str, x: str = 'iter') -> tuple:
        """(xs, ys) of a training scalar against ``x`` (``iter`` or ``epoch``)."""
        events = [e for e in self.train if key in e and x in e]
        return [e[x] for e in events], [e[key] for e in events]

    def val_series(self, key: str) -> tuple:
        """(epochs, values) of a validation metric; a repeated epoch keeps its last value
        (a resumed run re-evaluates)."""
        by_step = {}
        for e in self.val:
            if key in e:
                by_step[e['step']] = e[key]
        steps = sorted(by_step)
        return steps, [by_step[s] for s in steps]

    def train_keys(self) -> List[str]:
        keys = []
        for e in self.train:
            keys.extend(k for k in e if k not in keys)
        return keys

    def val_keys(self) -> List[str]:
        keys = []
        for e in self.val:
            keys.extend(k for k in e if k not in keys)
        return keys


def find_scalars(path: str) -> List[str]:
    """scalars.json files for ``path``: the file itself, or every run under a work dir
    (timestamp folders in time order).

    Raises:
        FileNotFoundError: when nothing is found.
    """
    if osp.isfile(path):
        return [path]
    found = sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
    found += sorted(glob.glob(osp.join(path, 'vis_data', 'scalars.json')))
    if not found:
        raise FileNotFoundError(f'no vis_data/scalars.json under {path!r} (is it an mmengine '
                                'work dir with LocalVisBackend?)')
    return found


def load_scalars(paths: List[str]) -> ScalarLog:
    """Merge one or more scalars.json files (e.g. a run and its resumption) into one log.

    Training events are de-duplicated by iteration (the later file wins), so a resumed run
    does not draw its overlapping iterations twice.

    Raises:
        ValueError: for a line that is not JSON (names file and line).
    """
    train_by_iter: Dict[int, Dict] = {}
    val: List[Dict] = []
    for path in paths:
        with open(path) as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    event = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f'{path}:{lineno}: not a JSON line ({e.msg})') from None
                if 'iter' in event or 'loss' in event:
                    train_by_iter[event.get('iter', event.get('step', lineno))] = event
                else:
                    val.append(event)
    return ScalarLog(path=paths[-1] if paths else '',
                     train=[train_by_iter[k] for k in sorted(train_by_iter)], val=val)


__all__ = ['ScalarLog', 'find_scalars', 'load_scalars']
