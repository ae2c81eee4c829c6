"""Benchmark the deformable sampling's special paths against the plain reference, in one run.

    python tools/analysis_tools/benchmark_msda.py [--shapes small enc dec] [--iters 10]
        [--warmup 2] [--contests backward lowering lowering-train] [--threads N]

Each contest times a special path ("kept") against what would replace it ("peer") on the same
inputs, alternating the two in every iteration, and prints the median times and the median of
the per-iteration ratios peer / kept (> 1: the special path is faster; the two runs of one
iteration are back to back, so a change of the machine's speed cancels out). CPU, float32.

Contests:

* ``backward``: eager forward + backward of ``torch.ops.mmdet_ddetr.ms_deform_attn`` (its
  hand-written backward, which recomputes the samples) against autograd through the reference
  :func:`~mmdet_ddetr.ops.ms_deform_sample`.
* ``lowering``: inference forward under ``torch.compile`` (inductor, static shapes): the op
  lowered to the fused corner sum against inductor compiling the reference itself.
* ``lowering-train``: the same two compiled, forward + backward.

Shapes (R50 Deformable DETR: 8 heads x 32 channels, 4 levels x 4 points, batch 2; levels at
strides 8-64 of the image):

* ``small``: 128x160 image, encoder queries (one per pixel of every level, 426);
* ``enc``: 256x320 image (``benchmark_vs_mmdet.py``'s size), encoder queries (1700);
* ``dec``: 256x320 image, 300 decoder queries;
* ``medium``: 512x672 image (``benchmark_vs_mmdet.py``'s default size), encoder queries (7144).
"""
import argparse
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

SHAPES = {
    'small': ((128, 160), None),
    'enc': ((256, 320), None),
    'dec': ((256, 320), 300),
    'medium': ((512, 672), None),
}
HEADS, HEAD_DIM, LEVELS, POINTS, BATCH = 8, 32, 4, 4, 2
CONTESTS = ('backward', 'lowering', 'lowering-train')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--shapes', nargs='+', default=['small', 'enc', 'dec'],
                        choices=list(SHAPES))
    parser.add_argument('--contests', nargs='+', default=list(CONTESTS), choices=CONTESTS)
    parser.add_argument('--iters', type=int, default=10, help='timed iterations per contest')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    return parser.parse_args(argv)


def level_shapes(image: Tuple[int, int]) -> List[Tuple[int, int]]:
    """Feature map sizes at strides 8, 16, 32, 64 (ResNet C3-C5 plus one extra level)."""
    shapes, (height, width) = [], image
    for _ in range(LEVELS):
        stride = 2 if shapes else 8
        height, width = -(-height // stride), -(-width // stride)  # ceil, as the convs round
        shapes.append((height, width))
    return shapes


def make_inputs(image: Tuple[int, int], num_query, seed: int = 0) -> Dict:
    """Random inputs of one MSDA call; locations reach a little outside [0, 1]."""
    shapes = level_shapes(image)
    num_value = sum(h * w for h, w in shapes)
    num_query = num_query or num_value
    g = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes)
    return dict(
        value=torch.randn(BATCH, num_value, HEADS, HEAD_DIM, generator=g),
        spatial_shapes=spatial_shapes,
        level_start_index=torch.cat((spatial_shapes.new_zeros(1),
                                     spatial_shapes.prod(1).cumsum(0)[:-1])),
        sampling_locations=torch.rand(BATCH, num_query, HEADS, LEVELS, POINTS, 2,
                                      generator=g) * 1.1 - 0.05,
        attention_weights=torch.rand(BATCH, num_query, HEADS, LEVELS, POINTS,
                                     generator=g).div(LEVELS * POINTS),
        shape_list=[n for shape in shapes for n in shape])


def op_call(inputs: Dict) -> torch.Tensor:
    from mmdet_ddetr.ops import ms_deform_attn
    return ms_deform_attn(inputs['value'], inputs['spatial_shapes'],
                          inputs['level_start_index'], inputs['sampling_locations'],
                          inputs['attention_weights'], inputs['shape_list'], 64)


def reference_call(inputs: Dict) -> torch.Tensor:
    from mmdet_ddetr.ops import ms_deform_sample
    shape_list = inputs['shape_list']
    shapes = [(shape_list[i], shape_list[i + 1]) for i in range(0, len(shape_list), 2)]
    return ms_deform_sample(inputs['value'], shapes, inputs['sampling_locations'],
                            inputs['attention_weights'])


def forward_backward(fn: Callable) -> Callable:
    """``fn`` forward + backward of a fixed random projection of its output."""
    def step(inputs: Dict) -> None:
        leaves = {k: inputs[k].detach().requires_grad_()
                  for k in ('value', 'sampling_locations', 'attention_weights')}
        out = fn({**inputs, **leaves})
        out.backward(inputs['grad_output'])
    return step


def inference(fn: Callable) -> Callable:
    def step(inputs: Dict) -> None:
        with torch.no_grad():
            fn(inputs)
    return step


def compiled(fn: Callable) -> Callable:
    from mmdet_ddetr.ops import register_inductor_decomposition
    register_inductor_decomposition()
    compiled_fn = torch.compile(
        lambda v, ss, lsi, loc, w, shape_list: fn(dict(
            value=v, spatial_shapes=ss, level_start_index=lsi, sampling_locations=loc,
            attention_weights=w, shape_list=shape_list)),
        backend='inductor', dynamic=False, fullgraph=True)
    return lambda inputs: compiled_fn(inputs['value'], inputs['spatial_shapes'],
                                      inputs['level_start_index'],
                                      inputs['sampling_locations'],
                                      inputs['attention_weights'], inputs['shape_list'])


def contest_pair(contest: str) -> Tuple[Tuple[str, Callable], Tuple[str, Callable]]:
    """(kept name, step), (peer name, step) of one contest."""
    if contest == 'backward':
        return (('hand-written backward', forward_backward(op_call)),
                ('autograd through the reference', forward_backward(reference_call)))
    if contest == 'lowering':
        return (('compiled op, corner lowering', inference(compiled(op_call))),
                ('compiled reference', inference(compiled(reference_call))))
    return (('compiled op, corner lowering', forward_backward(compiled(op_call))),
            ('compiled reference', forward_backward(compiled(reference_call))))


def timed(step: Callable, inputs: Dict) -> float:
    start = time.perf_counter()
    step(inputs)
    return time.perf_counter() - start


def run_contest(contest: str, shape: str, iters: int, warmup: int) -> Dict:
    # Every compiled step wraps the same lambda: without a reset, dynamo counts the contests'
    # graphs as recompilations of one function and stops at its limit (8).
    torch._dynamo.reset()
    inputs = make_inputs(*SHAPES[shape])
    (kept_name, kept), (peer_name, peer) = contest_pair(contest)
    with torch.no_grad():
        inputs['grad_output'] = torch.randn_like(op_call(inputs))
    start = time.perf_counter()
    for _ in range(warmup):  # the first calls compile (lowering contests)
        kept(inputs)
        peer(inputs)
    warm_s = time.perf_counter() - start
    kept_s: List[float] = []
    peer_s: List[float] = []
    for _ in range(iters):
        kept_s.append(timed(kept, inputs))
        peer_s.append(timed(peer, inputs))
    ratio = statistics.median(p / k for k, p in zip(kept_s, peer_s))
    return dict(contest=contest, shape=shape, kept=kept_name, peer=peer_name,
                kept_ms=1e3 * statistics.median(kept_s), peer_ms=1e3 * statistics.median(peer_s),
                ratio=ratio, warmup_s=warm_s)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, float32, batch {BATCH}, '
          f'{HEADS} heads x {HEAD_DIM}, {LEVELS} levels x {POINTS} points, '
          f'{args.iters} iterations after {args.warmup} warm-up')
    print(f'{"contest":15} {"shape":7} {"kept ms":>9} {"peer ms":>9} {"peer/kept":>9}  '
          f'{"warm-up s":>9}  kept vs peer')
    for contest in args.contests:
        for shape in args.shapes:
            row = run_contest(contest, shape, args.iters, args.warmup)
            print(f'{contest:15} {shape:7} {row["kept_ms"]:9.2f} {row["peer_ms"]:9.2f} '
                  f'{row["ratio"]:9.3f}  {row["warmup_s"]:9.1f}  {row["kept"]} vs '
                  f'{row["peer"]}', flush=True)


if __name__ == '__main__':
    main()
