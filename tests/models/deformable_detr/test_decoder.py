"""Iterative box refinement, run by the decoder (paper Sec. 4.2)."""
import torch

from mmdet_ddetr.models.deformable_detr import apply_box_delta, refine_reference, scale_to_levels


def test_point_reference_moves_only_the_centre():
    ref = torch.tensor([[[0.3, 0.7]]])
    delta = torch.zeros(1, 1, 4)
    box = apply_box_delta(delta, ref)
    torch.testing.assert_close(box[..., :2], ref)
    torch.testing.assert_close(box[..., 2:], torch.full((1, 1, 2), 0.5))


def test_box_reference_shifts_all_coordinates_in_logit_space():
    ref = torch.tensor([[[0.3, 0.7, 0.2, 0.1]]])
    delta = torch.tensor([[[1.0, -1.0, 0.5, 0.0]]])
    expected = (torch.logit(ref) + delta).sigmoid()
    torch.testing.assert_close(apply_box_delta(delta, ref), expected)


def test_refined_reference_is_detached():
    ref = torch.rand(2, 3, 4).clamp(0.1, 0.9)
    delta = torch.randn(2, 3, 4, requires_grad=True)
    refined = refine_reference(delta, ref)
    assert not refined.requires_grad
    box = apply_box_delta(delta, ref)
    assert box.requires_grad


def test_scale_to_levels_scales_boxes_like_points():
    ref = torch.tensor([[[0.5, 0.5, 0.2, 0.4]]])
    ratios = torch.tensor([[[0.5, 1.0], [0.25, 0.5]]])
    out = scale_to_levels(ref, ratios)
    assert out.shape == (1, 1, 2, 4)
    torch.testing.assert_close(out[0, 0, 1], torch.tensor([0.125, 0.25, 0.05, 0.2]))
    torch.testing.assert_close(scale_to_levels(ref[..., :2], ratios)[0, 0, 0],
                               torch.tensor([0.25, 0.5]))
