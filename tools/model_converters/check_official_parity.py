"""Check mmdet_ddetr against a fixture produced by the official implementation.

    python tools/model_converters/check_official_parity.py FIXTURE.pt [FIXTURE.pt ...]
        [--device cuda]

Builds our model from the fixture's hyper-parameters, converts its official state_dict, runs the
stored inputs in float64 and prints the max abs difference of every output, loss, matching and
post-processed detection. Exits 1 if any difference exceeds --tol (default 1e-4).
``--device cuda`` runs the same float64 check on the GPU (mmcv's deformable-attention kernel
dispatches double), with the same tolerance.
"""
import argparse
import os.path as osp
import sys

import torch


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('fixtures', nargs='+', help='fixture .pt file(s)')
    parser.add_argument('--tol', type=float, default=1e-4, help='max allowed abs difference')
    parser.add_argument('--device', default='cpu',
                        help="where to run the model, e.g. 'cpu' (default) or 'cuda'")
    args = parser.parse_args()
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: torch sees no CUDA device on this machine')
    return args


def main() -> int:
    args = parse_args()
    import mmdet_ddetr  # noqa: F401  (registers the models)
    from mmdet_ddetr.parity import checker_for
    from mmengine.registry import DefaultScope
    DefaultScope.get_instance('check_official_parity', scope_name='mmdet')
    torch.set_grad_enabled(False)
    failed = False
    for path in args.fixtures:
        if not osp.isfile(path):
            print(f'error: fixture {path!r} does not exist', file=sys.stderr)
            return 2
        fixture = torch.load(path, map_location='cpu', weights_only=True)
        diffs = checker_for(fixture)(fixture, device=args.device)
        worst = max(diffs.values())
        print(f'== {osp.basename(path)} ({fixture["meta"]["variant"]}, {args.device}): '
              f'{len(diffs)} checks, '
              f'max abs diff {worst:.3e}')
        width = max(map(len, diffs))
        for name, diff in diffs.items():
            flag = 'FAIL' if not diff <= args.tol else 'ok'
            print(f'  {name:<{width}}  {diff:.3e}  {flag}')
        if not worst <= args.tol:
            failed = True
            print(f'FAILED: {osp.basename(path)} differs by more than {args.tol:g}')
        else:
            print(f'PASSED: {osp.basename(path)} (tolerance {args.tol:g})')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
