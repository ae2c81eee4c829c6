import torch

from mmdet_ddetr.models.common import valid_ratio


def test_valid_ratio_counts_first_row_and_column():
    mask = torch.ones(2, 5, 10, dtype=torch.bool)
    mask[0, :3, :7] = False
    mask[1, :, :] = False
    ratios = valid_ratio(mask)
    assert ratios.dtype == torch.float32
    torch.testing.assert_close(ratios, torch.tensor([[0.7, 0.6], [1.0, 1.0]]))
