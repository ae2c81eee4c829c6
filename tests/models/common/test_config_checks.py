"""Size checks at detector build: num_queries=0 and non-integer sizes fail by config key."""
import pytest

from mmdet.registry import MODELS
from mmdet_ddetr.models.common.config_checks import check_config_sizes
from tests.variants import SMALL_VARIANTS


def _set(cfg, path, value):
    *parents, last = path.split('.')
    for key in parents:
        cfg = cfg[key]
    cfg[last] = value


@pytest.mark.parametrize('variant', ['ddetr', 'smca', 'smca-ms'])
@pytest.mark.parametrize('path, value, error, message', [
    ('num_queries', 0, ValueError, 'model.num_queries must be >= 1, got 0'),
    ('num_queries', 10.5, TypeError, 'model.num_queries must be a whole number, got 10.5'),
    ('bbox_head.num_classes', 0, ValueError, 'model.bbox_head.num_classes must be >= 1'),
    ('positional_encoding.num_feats', 16.0, TypeError,
     'model.positional_encoding.num_feats must be a whole number, got 16.0'),
])
def test_bad_sizes_fail_at_build_by_key(variant, path, value, error, message):
    cfg = SMALL_VARIANTS[variant]()
    _set(cfg, path, value)
    with pytest.raises(error) as info:
        MODELS.build(cfg)
    assert message in str(info.value)


def test_nested_layer_sizes_are_named_with_their_path():
    cfg = dict(num_layers=2, layer_cfg=dict(self_attn_cfg=dict(embed_dims=32.0, num_heads=4)))
    with pytest.raises(TypeError, match=r'model\.encoder\.layer_cfg\.self_attn_cfg\.embed_dims'):
        check_config_sizes('model.encoder', cfg)
    check_config_sizes('model.encoder', dict(cfg, layer_cfg=dict(self_attn_cfg=dict(
        embed_dims=32, num_heads=4))))
