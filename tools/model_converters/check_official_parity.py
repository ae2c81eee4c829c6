"""Check mmdet_ddetr against a fixture produced by the official implementation.

    python tools/model_converters/check_official_parity.py FIXTURE.pt [FIXTURE.pt ...]
        [--device cuda]

Builds our model from the fixture's hyper-parameters, converts its official state_dict, runs the
stored inputs in float64 and prints the max abs difference of every output, loss, matching and
post-processed detection. Exits 1 if any difference exceeds --tol (default 1e-4).
``--device cuda`` runs the same float64 check on the GPU (mmcv's deformable-attention kernel
dispatches double), with the same tolerance. ``--json FILE`` also writes every difference.

The official code computes a few values in float32 even in a float64 model (the fixture README's
"float32 islands"); one of them, the two-stage proposals' ``log``, goes through MKL's vector
math, whose last-bit rounding depends on the code path MKL picks for the CPU (it differs between
AMD and Intel machines by up to 1 ulp, 1.2e-7 in the logits). The fixtures were made on MKL's
vendor-independent path, so this tool pins it (``MKL_CBWR=COMPATIBLE``, read when MKL starts,
hence before torch is imported) unless the caller chose another: the same rounding on every
x86 machine, at the price of slower matrix products in this one process.
"""
import argparse
import json
import os
import os.path as osp
import sys

os.environ.setdefault('MKL_CBWR', 'COMPATIBLE')

import torch  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('fixtures', nargs='+', help='fixture .pt file(s)')
    parser.add_argument('--tol', type=float, default=1e-4, help='max allowed abs difference')
    parser.add_argument('--json', help='also write {fixture file name: {check: difference}} here')
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
    results = {}
    for path in args.fixtures:
        if not osp.isfile(path):
            print(f'error: fixture {path!r} does not exist', file=sys.stderr)
            return 2
        fixture = torch.load(path, map_location='cpu', weights_only=True)
        diffs = checker_for(fixture)(fixture, device=args.device)
        results[osp.basename(path)] = diffs
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
    if args.json:
        from mmdet_ddetr.utils import atomic_open
        with atomic_open(args.json, 'w') as f:
            json.dump(results, f, indent=1)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
