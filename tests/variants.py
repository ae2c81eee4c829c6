"""The six model variants at unit-test size, by name (the device and deployment suites run each)."""
from typing import Any, Callable, Dict

from tests.conftest import small_ddetr_cfg
from tests.models.smca_detr.common import small_smca_cfg

SMALL_VARIANTS: Dict[str, Callable[[], Dict[str, Any]]] = {
    'ddetr': lambda: small_ddetr_cfg(),
    'ddetr-single-scale': lambda: small_ddetr_cfg(num_levels=1),
    'ddetr-refine': lambda: small_ddetr_cfg(with_box_refine=True),
    'ddetr-refine-twostage': lambda: small_ddetr_cfg(with_box_refine=True, as_two_stage=True),
    'smca': lambda: small_smca_cfg(),
    'smca-ms': lambda: small_smca_cfg(multi_scale=True),
}
