"""smca_prior_width.py reports the width the priors predict: with every scale at s = 2 and
beta 8, sigma = sqrt(8 / (2 * 4)) = 1 cell exactly."""
import sys

import numpy as np
import pytest
import torch
from mmcv import imwrite
from mmengine.config import Config

from mmdet.registry import MODELS
from tests.conftest import REPO

sys.path.insert(0, str(REPO / 'tools' / 'analysis_tools'))
CONFIG = REPO / 'configs/smca_detr/smca-detr_r18_1xb4-quickstart_synthetic.py'


def test_reports_the_predicted_width(tmp_path):
    import smca_prior_width
    model = MODELS.build(Config.fromfile(str(CONFIG)).model)
    model.init_weights()
    for layer in model.decoder.layers:
        torch.nn.init.zeros_(layer.gaussian_prior.scale_fc.weight)
        torch.nn.init.constant_(layer.gaussian_prior.scale_fc.bias, 2.0)
    ckpt = tmp_path / 'model.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    rng = np.random.default_rng(0)
    for i in range(2):
        imwrite(rng.integers(0, 255, (96, 112, 3), dtype=np.uint8), str(tmp_path / f'{i}.png'))
    widths = smca_prior_width.main([str(CONFIG), str(ckpt), '--images', str(tmp_path / '*.png')])
    assert widths == pytest.approx(dict(q1=1.0, median=1.0, q3=1.0), abs=1e-6)


def test_no_matching_image_is_named(tmp_path, capsys):
    import smca_prior_width
    with pytest.raises(SystemExit):
        smca_prior_width.main([str(CONFIG), 'x.pth', '--images', str(tmp_path / '*.png')])
    assert 'matches no file' in capsys.readouterr().err
