"""Record the outputs and losses of the six small variants (``tests/variants.py``) in float64.

    python tools/misc/record_golden_outputs.py [--out tests/data/golden/small_variants.pt]

The guard rail of refactors that must not change numerics (moves, merges): record on the code
before the change, then ``tests/models/test_golden_outputs.py`` reruns this script on the code
after it and requires every tensor to be bit-identical (``torch.equal``). A step that changes
numerics on purpose records again and says which values moved and why in its commit.

Per variant (fixed seed, weights from ``init_weights``, two images of different sizes so that
padding masks matter): ``predict`` in eval mode (boxes, scores, labels of each image) and
``loss`` in train mode with every dropout at p=0 (train mode, because the two-stage encoder
loss only exists in training).

Bit-identical results across machines need the same rounding everywhere, so before torch starts
this process pins MKL's vendor-independent code path (``MKL_CBWR=COMPATIBLE``, as
``tools/model_converters/check_official_parity.py`` does) and torch's vector code to AVX2
(``ATEN_CPU_CAPABILITY``), and then runs on one thread (the order of parallel sums depends on the
thread count). A caller's own setting of either variable wins.
"""
import argparse
import logging
import os
import os.path as osp
import sys
from typing import Dict

os.environ.setdefault('MKL_CBWR', 'COMPATIBLE')
os.environ.setdefault('ATEN_CPU_CAPABILITY', 'avx2')

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEFAULT_OUT = osp.join(REPO, 'tests', 'data', 'golden', 'small_variants.pt')
#: Two images of different sizes (the smallest that give every level a few cells).
IMAGE_SIZES = ((64, 48), (48, 72))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', default=DEFAULT_OUT, help='where to write the .pt file')
    return parser.parse_args(argv)


def dropout_off(model: nn.Module) -> None:
    """Set every dropout below ``model`` to p=0 (``nn.Dropout`` and its subclasses, and the
    functional dropout of ``nn.MultiheadAttention``), so that train mode draws no random mask."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        elif isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0


def to_float64(batch: Dict) -> Dict:
    """The batch of ``tests.conftest.make_batch`` with images and ground-truth boxes in float64."""
    for sample in batch['data_samples']:
        sample.gt_instances.bboxes = sample.gt_instances.bboxes.double()
    return dict(inputs=batch['inputs'].double(), data_samples=batch['data_samples'])


def variant_outputs(name: str) -> Dict[str, Tensor]:
    """``{'predict.<image>.<field>': ..., 'loss.<name>': ...}`` of one variant of
    ``tests.variants.SMALL_VARIANTS``, all float64 except the labels (int64)."""
    from tests.conftest import build_model, make_batch
    from tests.variants import SMALL_VARIANTS
    model = build_model(SMALL_VARIANTS[name]()).double()
    dropout_off(model)
    batch = to_float64(make_batch(IMAGE_SIZES))
    outputs = {}
    model.eval()
    with torch.no_grad():
        results = model.predict(batch['inputs'], batch['data_samples'])
    for i, result in enumerate(results):
        for field in ('bboxes', 'scores', 'labels'):
            outputs[f'predict.{i}.{field}'] = result.pred_instances[field]
    model.train()
    torch.manual_seed(0)
    for key, value in model.loss(batch['inputs'], batch['data_samples']).items():
        outputs[f'loss.{key}'] = value.detach()
    return outputs


def record() -> Dict[str, Dict[str, Tensor]]:
    """``{variant name: variant_outputs(name)}`` for the six variants, in this pinned process."""
    from tests.variants import SMALL_VARIANTS
    return {name: variant_outputs(name) for name in SMALL_VARIANTS}


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, REPO)
    torch.set_num_threads(1)
    import mmdet_ddetr  # noqa: F401  (registers the models)
    from mmdet_ddetr.utils.atomic_io import atomic_open
    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)  # init_weights logs every parameter
    golden = record()
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    with atomic_open(args.out) as f:
        torch.save(golden, f)
    print(f'wrote {args.out}: ' + ', '.join(f'{name} ({len(v)} tensors)' for name, v in golden.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
