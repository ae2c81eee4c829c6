"""No host synchronisation in inference: the tensor forward of every variant, with the inputs
already on the GPU, under ``torch.cuda.set_sync_debug_mode``.

Each synchronising call is collected (the debug mode's warnings carry the Python line that
made it) instead of stopping at the first, so one run lists them all. A sync is accepted only
if it is listed in ``ALLOWED`` with the reason it cannot be avoided; every other one fails the
test, by file and line. ``ALLOWED`` starts empty: nothing in the forward is known to need one.
"""
import warnings
from collections import Counter
from typing import Dict

import pytest
import torch

from tests.conftest import build_model
from tests.variants import SMALL_VARIANTS
from .conftest import record
from .test_models_cuda import batch, no_dropout

pytestmark = pytest.mark.cuda

#: "path/suffix.py:line" -> why this synchronisation cannot be avoided.
ALLOWED: Dict[str, str] = {}


def sync_sites(fn) -> Counter:
    """Run ``fn`` and count the synchronising CUDA calls by the Python line that made them."""
    sites: Counter = Counter()
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode('default')
    for warning in caught:
        if 'synchroniz' in str(warning.message):
            sites[f'{warning.filename}:{warning.lineno}'] += 1
    return sites


@pytest.mark.parametrize('variant', list(SMALL_VARIANTS))
def test_tensor_forward_is_sync_free(device, variant):
    if device.type != 'cuda':
        pytest.skip('synchronisation is a CUDA notion: nothing to check on the CPU')
    model = no_dropout(build_model(SMALL_VARIANTS[variant]())).to(device).eval()
    data = model.data_preprocessor(batch(), training=False)

    def forward():
        with torch.no_grad():
            model(**data, mode='tensor')

    forward()  # warm-up: first-call allocations and cuDNN heuristics are not the model's
    sites = sync_sites(forward)
    record(f'sync_{variant}', sites=dict(sites))
    unexplained = {site: n for site, n in sites.items()
                   if not any(site.endswith(allowed) for allowed in ALLOWED)}
    assert not unexplained, (f'{variant}: {sum(unexplained.values())} host synchronisation(s) '
                             f'in the tensor forward: {unexplained}')


def test_sync_detection_works(device):
    """The collector sees a sync where there certainly is one (``.item()``)."""
    if device.type != 'cuda':
        pytest.skip('synchronisation is a CUDA notion: nothing to check on the CPU')
    x = torch.ones(3, device=device)
    assert sum(sync_sites(lambda: x.sum().item()).values()) >= 1
