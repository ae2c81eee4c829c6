"""Export a detector of this package to ONNX (deformable sampling as standard GridSample).

Examples::

    python tools/deployment/export_onnx.py configs/deformable_detr/deformable-detr_r50_16xb2-50e_coco.py \
        --checkpoint ckpt.pth --out ddetr.onnx --shape 800 1333 --dynamic --verify
    python tools/deployment/export_onnx.py CONFIG --out m.onnx --shape 128 160 --verify  # own init

Input ``images`` (bs, 3, H, W) float32 raw pixels in the pipeline's channel order (BGR);
normalisation is inside the graph. Outputs ``boxes`` (bs, k, 4) xyxy in input pixels,
``scores`` (bs, k), ``labels`` (bs, k). See :mod:`mmdet_ddetr.deployment.onnx_export`.
"""
import argparse
import os
import os.path as osp
import sys

from mmdet_ddetr.deployment import (DEFAULT_OPSET, MIN_OPSET, UnsupportedExport,
                                    build_detector, export_onnx, verify_onnx)
from mmdet_ddetr.deployment.onnx_export import MIN_DYNAMIC_SIDE
from mmdet_ddetr.utils.atomic_io import atomic_write
from mmdet_ddetr.utils.cli import checked, positive_int

opset_type = checked(int, 'an integer', lambda v: v >= MIN_OPSET,
                     f'GridSample needs opset >= {MIN_OPSET}')
side_type = checked(int, 'an integer', lambda v: v >= 32, 'each side must be >= 32 pixels')
tolerance_type = checked(float, 'a number', lambda v: v > 0, 'expected a number > 0')
# --verify of a --dynamic export runs at (H + 32, W - 32) to prove the dynamic axes.
VERIFY_SHIFT = 32


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='model config (any shipped config)')
    parser.add_argument('--checkpoint', help='weights; without it the model\'s own init')
    parser.add_argument('--out', required=True, help='output .onnx file (written atomically)')
    parser.add_argument('--shape', nargs=2, type=side_type, default=[800, 1333],
                        metavar=('H', 'W'), help='example input size (default 800 1333)')
    parser.add_argument('--batch-size', type=positive_int, default=1,
                        help='example batch (the fixed batch of SMCA models)')
    parser.add_argument('--opset', type=opset_type, default=DEFAULT_OPSET,
                        help=f'ONNX opset (>= {MIN_OPSET}, default {DEFAULT_OPSET})')
    parser.add_argument('--dynamic', action='store_true',
                        help='dynamic image size (and batch for Deformable DETR models)')
    parser.add_argument('--verify', action='store_true',
                        help='compare ONNX Runtime (CPU) with PyTorch; above --tolerance exit 1 '
                        'and write no file')
    parser.add_argument('--tolerance', type=tolerance_type, default=1e-4,
                        help='max abs difference of boxes and scores for --verify (> 0)')
    args = parser.parse_args(argv)
    check_args(parser, args)
    return args


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (exit 2) for what would otherwise fail after minutes of building, tracing
    and exporting: the files, the output folder and the shapes."""
    if not osp.isfile(args.config):
        parser.error(f'config file {args.config!r} does not exist')
    if args.checkpoint is not None and not osp.isfile(args.checkpoint):
        parser.error(f'--checkpoint {args.checkpoint!r} does not exist')
    if not args.out.endswith('.onnx'):
        parser.error(f'--out must end in .onnx, got {args.out!r}')
    out_dir = osp.dirname(osp.abspath(args.out))
    if not osp.isdir(out_dir):
        parser.error(f'--out {args.out!r}: folder {out_dir} does not exist (create it first)')
    if not os.access(out_dir, os.W_OK | os.X_OK):
        parser.error(f'--out {args.out!r}: folder {out_dir} is not writable')
    if args.dynamic:
        height, width = args.shape
        if min(height, width) < MIN_DYNAMIC_SIDE:
            parser.error(f'--dynamic with --shape {height} {width}: each side must be '
                         f'>= {MIN_DYNAMIC_SIDE}')
        if args.verify and width - VERIFY_SHIFT < MIN_DYNAMIC_SIDE:
            parser.error(f'--dynamic --verify checks at {height + VERIFY_SHIFT}x'
                         f'{width - VERIFY_SHIFT}: --shape W must be '
                         f'>= {MIN_DYNAMIC_SIDE + VERIFY_SHIFT}')


class VerifyFailed(Exception):
    """The exported file disagrees with PyTorch; raised inside the atomic write so that the
    file never reaches its final name."""


def _export_and_verify(detector, args, path: str) -> dict | None:
    """Export to ``path`` and, with --verify, compare; returns the verify result (or None)."""
    shape = tuple(args.shape)
    info = export_onnx(detector, path, shape=shape, batch_size=args.batch_size,
                       opset=args.opset, dynamic=args.dynamic)
    print(f'[export] {args.out}: opset {args.opset}, dynamic axes '
          f'{info["dynamic_axes"] or "none"}, {info["nodes"].get("GridSample", 0)} GridSample '
          f'nodes, {info["export_s"]:.1f} s')
    if not args.verify:
        return None
    # A different input size than the example proves the dynamic axes.
    verify_shape = (shape[0] + VERIFY_SHIFT, shape[1] - VERIFY_SHIFT) if args.dynamic else shape
    result = verify_onnx(detector, path, verify_shape, batch_size=args.batch_size,
                         tolerance=args.tolerance)
    print(f'[verify] onnxruntime vs PyTorch at {verify_shape[0]}x{verify_shape[1]}: '
          f'max |boxes| diff {result["max_abs_box"]:.2e}, max |scores| diff '
          f'{result["max_abs_score"]:.2e}, labels equal {result["labels_equal"]:.3f} '
          f'-> {"PASS" if result["passed"] else "FAIL"} (tolerance {args.tolerance:g})')
    if not result['passed']:
        raise VerifyFailed(f'{args.out} not written: the export failed --verify')
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        detector = build_detector(args.config, args.checkpoint)
        # The file is exported and verified under a temporary name and renamed only after
        # both succeed: a failed --verify leaves nothing (or the previous file) at --out.
        atomic_write(args.out, lambda tmp: _export_and_verify(detector, args, tmp))
    except UnsupportedExport as exc:
        print(f'export_onnx: {exc}', file=sys.stderr)
        return 2
    except VerifyFailed as exc:
        print(f'export_onnx: {exc}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
