"""Attention recording changes no output, and records what the model actually used; the
visualisation tool writes its PNGs."""
import copy
import sys
from pathlib import Path

import pytest
import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
from mmengine.config import Config

from mmdet_ddetr.analysis.attention import MSDARecorder, SMCARecorder, level_token_index
from mmdet_ddetr.analysis.flops import TensorForward
from mmdet_ddetr.models.deformable_detr.deformable_attention import MSDeformAttention
from tests.conftest import build_model, make_batch, small_ddetr_cfg

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / 'tools' / 'analysis_tools'))

DDETR_VARIANTS = [dict(), dict(num_levels=1), dict(with_box_refine=True),
                  dict(with_box_refine=True, as_two_stage=True)]


def small_smca_cfg(multi_scale: bool = False, dims: int = 32, heads: int = 4):
    """The shipped SMCA base config, shrunk (ResNet-18 without weights, 2 layers)."""
    name = 'smca-detr-ms_r50.py' if multi_scale else 'smca-detr_r50.py'
    cfg = copy.deepcopy(Config.fromfile(str(REPO / 'configs/_base_/models' / name))
                        .model.to_dict())
    out_indices = (2, 3) if multi_scale else (3, )
    cfg.update(num_queries=10)
    cfg['backbone'] = dict(type='ResNet', depth=18, num_stages=4, out_indices=out_indices,
                           norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True,
                           style='pytorch', init_cfg=None)
    cfg['neck'].update(in_channels=[64 * 2**i for i in out_indices], out_channels=dims)
    if multi_scale:
        cfg['neck']['norm_cfg'] = dict(type='GN', num_groups=8)
        cfg['encoder']['layer_types'] = ['intra', 'multi']
    else:
        cfg['encoder']['num_layers'] = 1
    cfg['decoder']['num_layers'] = 2
    for layer in (cfg['encoder']['layer_cfg'], cfg['decoder']['layer_cfg']):
        for key in ('self_attn_cfg', 'cross_attn_cfg'):
            if key in layer:
                layer[key] = dict(layer[key], embed_dims=dims, num_heads=heads, dropout=0.0)
        layer['ffn_cfg'] = dict(layer['ffn_cfg'], embed_dims=dims, feedforward_channels=64,
                                ffn_drop=0.0)
    cfg['positional_encoding']['num_feats'] = dims // 2
    cfg['bbox_head'].update(num_classes=3, embed_dims=dims)
    return cfg


def _forward(model, batch):
    with torch.no_grad():
        return TensorForward(model, batch['data_samples'])(batch['inputs'])


# Two images of different sizes: padding masks and valid ratios are exercised too.
SIZES = [(64, 80), (48, 72)]


@pytest.mark.parametrize('variant', DDETR_VARIANTS)
def test_msda_recording_keeps_outputs(variant):
    model = build_model(small_ddetr_cfg(**variant)).eval()
    batch = make_batch(SIZES)
    ref = _forward(model, batch)
    with MSDARecorder(model) as rec:
        got = _forward(model, batch)
    for a, b in zip(ref, got):
        assert torch.equal(a, b)
    # Every module recorded exactly one call, and the flags are restored.
    assert all(len(v) == 1 for v in rec.records.values())
    assert len(rec.names('encoder')) == 2 and len(rec.names('decoder')) == 2
    assert not any(m.record or m.last_sampling is not None for m in model.modules()
                   if isinstance(m, MSDeformAttention))


@pytest.mark.parametrize('variant', [dict(), dict(with_box_refine=True, as_two_stage=True)])
def test_recorded_locations_are_the_ones_used(variant):
    """Recompute every MSDA module's output from the *recorded* locations and weights with
    mmcv's reference implementation; it must equal what the module returned."""
    model = build_model(small_ddetr_cfg(**variant)).eval()
    batch = make_batch(SIZES)
    seen = {}
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, MSDeformAttention):
            def pre(mod, args, kwargs, name=name):
                seen[name] = dict(kwargs)

            def post(mod, args, kwargs, out, name=name):
                seen[name]['out'] = out

            handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(m.register_forward_hook(post, with_kwargs=True))
    try:
        with MSDARecorder(model) as rec:
            _forward(model, batch)
    finally:
        for h in handles:
            h.remove()
    modules = dict(model.named_modules())
    assert set(seen) == set(rec.records)
    for name, calls in rec.records.items():
        m, inp, r = modules[name], seen[name], calls[0]
        value = inp.get('value')
        value = inp['query'] if value is None else value
        identity = inp.get('identity')
        identity = inp['query'] if identity is None else identity
        v = m.value_proj(value)
        if inp.get('key_padding_mask') is not None:
            v = v.masked_fill(inp['key_padding_mask'][..., None], 0.0)
        bs, nv, _ = v.shape
        v = v.view(bs, nv, m.num_heads, -1)
        shapes = [tuple(s) for s in r.spatial_shapes.tolist()]
        sampled = multi_scale_deformable_attn_pytorch(v, shapes, r.sampling_locations,
                                                      r.attention_weights)
        expect = m.output_proj(sampled) + identity
        torch.testing.assert_close(expect, inp['out'], rtol=1e-6, atol=1e-6)
        assert torch.equal(r.reference_points, inp['reference_points'])
        # Weights are a softmax over levels x points for every head.
        sums = r.attention_weights.flatten(-2).sum(-1)
        torch.testing.assert_close(sums, torch.ones_like(sums))


@pytest.mark.parametrize('multi_scale', [False, True])
@pytest.mark.parametrize('attn_type', ['MultiheadAttention', 'LeanMultiheadAttention'])
def test_smca_recording_keeps_outputs_and_records_used_weights(multi_scale, attn_type):
    cfg = small_smca_cfg(multi_scale)
    cfg['decoder']['layer_cfg']['cross_attn_cfg']['type'] = attn_type
    model = build_model(cfg).eval()
    batch = make_batch(SIZES)
    ref = _forward(model, batch)
    # Capture the co-attentions' inputs/outputs independently.
    attns = [layer.cross_attn for layer in model.decoder.layers]
    seen = {id(m): [] for m in attns}
    handles = [m.register_forward_hook(
        lambda mod, args, kwargs, out: seen[id(mod)].append((kwargs, out)), with_kwargs=True)
        for m in attns]
    try:
        with SMCARecorder(model) as rec:
            got = _forward(model, batch)
    finally:
        for h in handles:
            h.remove()
    for a, b in zip(ref, got):
        assert torch.equal(a, b)
    assert all(type(m).__name__ == attn_type for m in attns)
    assert not any(getattr(m, 'record_weights', False) or
                   getattr(m, 'recorded_weights', None) is not None for m in attns)
    assert not any(m.attn._forward_pre_hooks or m.attn._forward_hooks for m in attns)
    num_scales = 3 if multi_scale else 1
    assert len(rec.layers) == 2
    for layer_rec, attn in zip(rec.layers, attns):
        assert len(layer_rec.log_priors) == len(layer_rec.attn_weights) == num_scales
        mha = attn.attn  # holds the projection weights
        for s, (kwargs, out) in enumerate(seen[id(attn)]):
            w = layer_rec.attn_weights[s]  # (bs, heads, Q, K)
            bs, heads, nq, nk = w.shape
            h, wd = layer_rec.spatial_shapes[s]
            assert nk == h * wd and heads == 4
            assert layer_rec.log_priors[s].shape == w.shape
            # Attention output recomputed from the recorded per-head weights.
            value = kwargs['value']  # (bs, K, dim), batch first
            dim = value.shape[-1]
            v = torch.nn.functional.linear(value, mha.in_proj_weight[2 * dim:],
                                           mha.in_proj_bias[2 * dim:])
            v = v.view(bs, nk, heads, dim // heads).transpose(1, 2)
            o = kwargs['identity'] if 'identity' in kwargs else kwargs['query']
            o = o + mha.out_proj((w @ v).transpose(1, 2).reshape(bs, nq, dim))
            torch.testing.assert_close(o, out, rtol=1e-5, atol=1e-6)
            # And the prior it was modulated with is the one added to the logits.
            mask = kwargs['attn_mask'].view(bs, heads, nq, nk)
            finite = torch.isfinite(mask)
            torch.testing.assert_close(mask[finite], layer_rec.log_priors[s][finite])


def test_level_token_index():
    shapes = [(4, 6), (2, 3)]
    assert level_token_index(shapes, 0, 0, 0, (60, 40)) == 0
    assert level_token_index(shapes, 0, 59, 39, (60, 40)) == 23
    assert level_token_index(shapes, 1, 25, 25, (60, 40)) == 24 + 1 * 3 + 1
    with pytest.raises(ValueError, match='outside'):
        level_token_index(shapes, 0, 60, 0, (60, 40))
    with pytest.raises(ValueError, match='level 2'):
        level_token_index(shapes, 2, 0, 0, (60, 40))


# Runtime / pipeline settings for the tool tests; the model is replaced. Found by pattern so
# that a renamed quickstart config does not break these tests.
RUNTIME_CFG = sorted((REPO / 'configs/deformable_detr').glob('*quickstart_synthetic.py'))[0]


def _checkpoint_and_image(tmp_path, cfg_path, model_cfg):
    """A random-weight checkpoint of ``model_cfg`` (with ``cfg_path``'s pipeline) and a
    random image."""
    import cv2
    import numpy as np
    model = build_model(model_cfg)
    ckpt = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(
        dataset_meta=dict(classes=('a', 'b', 'c')))), ckpt)
    img = tmp_path / 'img.png'
    rng = np.random.default_rng(0)
    cv2.imwrite(str(img), rng.integers(0, 255, (100, 120, 3), dtype=np.uint8))
    cfg = Config.fromfile(str(cfg_path))
    cfg.model = model_cfg
    cfg_file = tmp_path / 'cfg.py'
    cfg.dump(str(cfg_file))
    return str(cfg_file), str(ckpt), str(img)


def test_tool_ddetr(tmp_path):
    import visualize_attention
    model_cfg = small_ddetr_cfg(with_box_refine=True)
    cfg, ckpt, img = _checkpoint_and_image(tmp_path, RUNTIME_CFG, model_cfg)
    out = tmp_path / 'vis'
    res = visualize_attention.main([cfg, ckpt, '--img', img, '--out-dir', str(out),
                                    '--topk', '2', '--pixel', '50', '40'])
    names = sorted(Path(p).name for p in res['files'])
    assert names == ['decoder_sampling.png', 'encoder_sampling.png']
    for p in res['files']:
        assert Path(p).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert not [p for p in out.iterdir() if p.name.startswith('.')]  # no temp files left
    with pytest.raises(SystemExit, match='outside'):
        visualize_attention.main([cfg, ckpt, '--img', img, '--out-dir', str(out),
                                  '--pixel', '5000', '1'])


def test_tool_smca(tmp_path):
    import visualize_attention
    cfg, ckpt, img = _checkpoint_and_image(tmp_path, RUNTIME_CFG,
                                           small_smca_cfg(multi_scale=False))
    res = visualize_attention.main([cfg, ckpt, '--img', img, '--out-dir', str(tmp_path / 'v'),
                                    '--topk', '1'])
    assert [Path(p).name for p in res['files']] == ['smca_attention.png']


def test_tool_bad_input(tmp_path, capsys):
    import visualize_attention
    with pytest.raises(SystemExit):
        visualize_attention.parse_args(['nope.py', 'nope.pth', '--img', 'x.png'])
    assert 'does not exist' in capsys.readouterr().err
    cfg = str(RUNTIME_CFG)
    with pytest.raises(SystemExit):
        visualize_attention.parse_args([cfg, cfg, '--img', cfg, '--topk', '0'])
    assert 'positive integer' in capsys.readouterr().err
