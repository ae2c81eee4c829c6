"""How wide SMCA's learnt Gaussian priors are: the width every decoder query predicts, in
feature cells, over a set of images.

The prior is ``log G = -s^2 d^2 / beta`` (per head and axis, ``s`` predicted by the layer's
``scale_fc``), i.e. a Gaussian of standard deviation ``sigma = sqrt(beta / (2 s^2))`` cells; at
initialisation ``s = 1``, so ``sigma = sqrt(beta / 2)`` (2 cells for the official beta 8). The
tool prints the quartiles of ``sigma`` over every query, head and axis of every decoder layer.
Comparing checkpoints early and late in training shows whether training narrows or widens the
prior (docs/experiments.md, "SMCA-DETR against DETR over 16 epochs").

Example::

    python tools/analysis_tools/smca_prior_width.py CONFIG CKPT --images 'data/synthetic/val/*.png'
"""
import argparse
import glob
from typing import Dict, Optional, Sequence

from mmdet_ddetr.utils.cli import add_verbose_argument, positive_int, quiet_init_log


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Quartiles of the width of SMCA's learnt Gaussian priors, in feature cells.")
    parser.add_argument('config', help='SMCA-DETR config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--images', required=True,
                        help="image files, a glob pattern (quote it), e.g. 'data/val/*.png'")
    parser.add_argument('--num-images', type=positive_int, default=20,
                        help='use the first N matching images (sorted; default 20)')
    parser.add_argument('--device', default='cpu')
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    args.image_files = sorted(glob.glob(args.images))[:args.num_images]
    if not args.image_files:
        parser.error(f'--images {args.images!r} matches no file')
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, float]:
    args = parse_args(argv)
    import torch
    from mmdet.apis import inference_detector, init_detector

    import mmdet_ddetr  # noqa: F401  (registers the models)
    from mmdet_ddetr.models.smca_detr import SMCAGaussianPrior
    quiet_init_log(args.verbose)
    model = init_detector(args.config, args.checkpoint, device=args.device)
    priors = [m for m in model.modules()
              if isinstance(m, SMCAGaussianPrior) and m.scale_fc is not None]
    if not priors:
        raise SystemExit('error: the model has no SMCA prior with a learnt scale (fixed-scale '
                         'or disabled priors have no width to measure)')
    sigmas, shape = [], {}

    def remember_shape(_prior, inputs):  # (query_feat, centres, spatial_shape)
        shape['hw'] = tuple(inputs[2])

    def record(prior):
        # scale_fc gives s per head (and axis): sigma = sqrt(beta / (2 s^2)), with beta as the
        # prior uses it on this map (bandwidth() covers a map-relative beta).
        def hook(_module, _inputs, scale):
            beta = prior.bandwidth(shape['hw'])
            sigmas.append((beta / (2 * scale.detach().double().pow(2))).sqrt().flatten())
        return hook

    hooks = [h for p in priors for h in (p.register_forward_pre_hook(remember_shape),
                                         p.scale_fc.register_forward_hook(record(p)))]
    try:
        for img in args.image_files:
            inference_detector(model, img)
    finally:
        for h in hooks:
            h.remove()
    sigma = torch.cat(sigmas)
    q1, median, q3 = torch.quantile(sigma, sigma.new_tensor([0.25, 0.5, 0.75])).tolist()
    init = (priors[0].smooth / 2)**0.5
    print(f'prior width sigma (feature cells) over {len(args.image_files)} image(s), '
          f'{len(priors)} prior(s): quartiles {q1:.2f} / {median:.2f} / {q3:.2f} '
          f'(s = 1, the initial scale, gives {init:.2f} with beta {priors[0].smooth:g})')
    return dict(q1=q1, median=median, q3=q3)


if __name__ == '__main__':
    main()
