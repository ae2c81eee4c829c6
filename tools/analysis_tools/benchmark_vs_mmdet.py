"""Benchmark mmdet_ddetr against mmdet's built-in counterpart, in one process, same inputs.

    python tools/analysis_tools/benchmark_vs_mmdet.py [--variants plain refine twostage]
        [--batch-size 2] [--img-size 512 672] [--iters 5] [--warmup 2] [--device cpu]

For every Deformable DETR variant it builds our DDETR and mmdet's DeformableDETR from the same
R50 config (backbones without pretrained weights) and copies mmdet's weights into ours through the
mmdet converter (identical weights, so identical work). For ``smca`` the peer is mmdet's DETR
(R50 C5, same width, depth, FFN and query count); every weight the two architectures share
(backbone, neck, encoder, decoder attention and FFN) is copied from DETR into SMCA, the rest
(SMCA's Gaussian-prior layers, its box head) keeps its own initialisation. It then alternates the
two models over
warm-up plus N timed iterations of inference (``predict``) and of a full training step (forward,
loss, backward, AdamW step) on the same batch. It prints images/s, peak memory (CPU: peak RSS
growth during the step, sampled every 2 ms after returning freed heap to the OS; CUDA: max
allocated) and the ratio ours/peer (> 1 means ours is faster / uses more memory). The speed ratio
is the median over iterations of the two models' time ratio within the iteration: the two runs
of one iteration are back to back, so a change of the machine's speed during the benchmark
(other load, clock) hits both alike and cancels out; the memory ratio is that of the medians.
"""
import argparse
import copy
import ctypes
import gc
import os
import statistics
import threading
import time
from typing import Callable, Dict, List, Tuple

import torch

VARIANTS = {
    'plain': dict(),
    'single-scale': dict(single_scale=True),
    'refine': dict(with_box_refine=True),
    'twostage': dict(with_box_refine=True, as_two_stage=True),
    'smca': dict(smca=True),
}
CONFIG = 'configs/deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'
SMCA_CONFIG = 'configs/smca_detr/smca-detr_r50_8xb2-50e_coco.py'
#: mmdet's own DETR R50 config, shipped inside the mmdet package.
DETR_CONFIG = '.mim/configs/detr/detr_r50_8xb2-150e_coco.py'


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--variants', nargs='+', default=['plain', 'refine', 'twostage'],
                        choices=list(VARIANTS))
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--img-size', type=int, nargs=2, default=[512, 672],
                        metavar=('H', 'W'), help='padded batch size; images vary below it')
    parser.add_argument('--num-queries', type=int, default=300)
    parser.add_argument('--iters', type=int, default=5, help='timed iterations per model')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--skip-infer', action='store_true')
    parser.add_argument('--compile', action='store_true',
                        help='also time torch.compile(dynamic=True) of ours and of mmdet\'s '
                        'model against the eager models, with compile times')
    parser.add_argument('--onnxruntime', action='store_true',
                        help='also export ours to ONNX and time ONNX Runtime (CPU) inference '
                        'against PyTorch eager (and compiled with --compile), unpadded batch')
    args = parser.parse_args()
    if args.iters < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error('--iters and --batch-size must be >= 1, --warmup >= 0')
    return args


def build_smca_pair(num_queries: int) -> Tuple[torch.nn.Module, torch.nn.Module]:
    """(our single-scale SMCA-DETR, mmdet's DETR) with the shared weights made equal."""
    import os.path as osp

    from mmengine.config import Config

    import mmdet
    from mmdet.registry import MODELS

    ours_cfg = Config.fromfile(SMCA_CONFIG).model.to_dict()
    peer_cfg = Config.fromfile(osp.join(osp.dirname(mmdet.__file__), DETR_CONFIG)).model
    peer_cfg = peer_cfg.to_dict()
    for cfg in (ours_cfg, peer_cfg):
        cfg['backbone']['init_cfg'] = None
        cfg['num_queries'] = num_queries
    torch.manual_seed(0)
    theirs = MODELS.build(peer_cfg)
    theirs.init_weights()
    ours = MODELS.build(ours_cfg)
    ours.init_weights()
    mine = ours.state_dict()
    shared = {k: v for k, v in theirs.state_dict().items()
              if k in mine and mine[k].shape == v.shape}
    ours.load_state_dict(shared, strict=False)
    print(f'smca: {len(shared)} of {len(mine)} SMCA tensors copied from DETR '
          '(the others are SMCA-only layers)')
    return ours, theirs


def build_pair(variant: Dict, num_queries: int) -> Tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, mmdet's) with identical hyper-parameters and, where the architectures allow,
    identical weights."""
    from mmengine.config import Config

    from mmdet.registry import MODELS
    from mmdet_ddetr.converters import mmdet_to_ours

    if variant.get('smca'):
        return build_smca_pair(num_queries)

    cfg = Config.fromfile(CONFIG).model.to_dict()
    cfg['backbone']['init_cfg'] = None
    cfg['num_queries'] = num_queries
    cfg['with_box_refine'] = variant.get('with_box_refine', False)
    cfg['as_two_stage'] = variant.get('as_two_stage', False)
    if variant.get('single_scale'):
        cfg.update(num_feature_levels=1)
        cfg['backbone']['out_indices'] = (3, )
        cfg['neck'].update(in_channels=[2048], num_outs=1)
        for coder, attn in (('encoder', 'self_attn_cfg'), ('decoder', 'cross_attn_cfg')):
            cfg[coder]['layer_cfg'][attn]['num_levels'] = 1
    # Same ranking as mmdet (class channel 0) so that the two do the same work.
    cfg['proposal_generator']['scoring'] = 'class0'
    peer = copy.deepcopy(cfg)
    peer.pop('proposal_generator')
    peer['type'] = 'DeformableDETR'
    peer['neck']['bias'] = 'auto'  # mmdet's stock neck
    peer['bbox_head']['type'] = 'DeformableDETRHead'
    peer['test_cfg'] = dict(max_per_img=100)
    torch.manual_seed(0)
    theirs = MODELS.build(peer)
    theirs.init_weights()
    ours = MODELS.build(cfg)
    ours.load_state_dict(mmdet_to_ours(theirs.state_dict(), proposal_scoring='class0'))
    return ours, theirs


def make_batch(batch_size: int, height: int, width: int, num_classes: int = 80) -> Dict:
    """A padded batch of different image sizes with a few boxes each (fixed seed)."""
    from mmengine.structures import InstanceData

    from mmdet.structures import DetDataSample
    g = torch.Generator().manual_seed(0)
    inputs = torch.zeros(batch_size, 3, height, width)
    samples = []
    for i in range(batch_size):
        h, w = height - 32 * (i % 3), width - 48 * (i % 2)
        inputs[i, :, :h, :w] = torch.randint(0, 255, (3, h, w), generator=g).float()
        xy = torch.rand(6, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
        wh = (torch.rand(6, 2, generator=g) * 0.25 + 0.05) * torch.tensor([w, h])
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             pad_shape=(height, width),
                                             batch_input_shape=(height, width),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(bboxes=torch.cat([xy, xy + wh], 1),
                                           labels=torch.randint(0, num_classes, (6, ),
                                                                generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


try:
    _LIBC = ctypes.CDLL('libc.so.6')
except OSError:  # not glibc: RSS growth is then an upper-bound-free estimate
    _LIBC = None


class PeakMemory:
    """Peak memory growth during a block: CUDA max allocated, or sampled process RSS."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_mb = 0.0

    @staticmethod
    def _rss_mb() -> float:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20

    def __enter__(self):
        gc.collect()
        if _LIBC is not None:
            # Return freed heap pages to the OS so that RSS growth measures this step's
            # allocations, not what the previous step left in glibc's free lists.
            _LIBC.malloc_trim(0)
        if self.device.startswith('cuda'):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated() / 2**20
        else:
            self._base = self._rss_mb()
            self._stop = threading.Event()
            self._samples = [self._base]

            def sample():
                while not self._stop.is_set():
                    self._samples.append(self._rss_mb())
                    time.sleep(0.002)
            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.startswith('cuda'):
            torch.cuda.synchronize()
            self.peak_mb = torch.cuda.max_memory_allocated() / 2**20 - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = max(self._samples) - self._base


def step_fns(model: torch.nn.Module, batch: Dict, device: str
             ) -> Tuple[Callable[[], None], Callable[[], None]]:
    """(inference, train step) closures for one model."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def infer():
        model.eval()
        with torch.no_grad():
            model(**model.data_preprocessor(copy.deepcopy(batch)), mode='predict')

    def train():
        model.train()
        data = model.data_preprocessor(copy.deepcopy(batch), training=True)
        losses = model(**data, mode='loss')
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return infer, train


def timed(fn: Callable[[], None], device: str) -> Tuple[float, float]:
    with PeakMemory(device) as mem:
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith('cuda'):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return elapsed, mem.peak_mb


def paired_speed_ratio(ours: List[float], peer: List[float]) -> float:
    """Median over iterations of ``peer_time / our_time`` (> 1: ours is faster).

    Args:
        ours / peer: Seconds per timed iteration, the i-th of each measured back to back.
    """
    if len(ours) != len(peer) or not ours:
        raise ValueError('need the same, non-zero number of timed iterations for both models')
    return statistics.median(p / o for o, p in zip(ours, peer))


def run_variant(name: str, args: argparse.Namespace
                ) -> List[Tuple[str, float, float, float, str]]:
    ours, theirs = build_pair(VARIANTS[name], args.num_queries)
    ours.to(args.device), theirs.to(args.device)
    batch = make_batch(args.batch_size, *args.img_size)
    batch['inputs'] = batch['inputs'].to(args.device)
    rows = []
    modes = [m for m, skip in (('inference', args.skip_infer), ('train step', args.skip_train))
             if not skip]
    for mode in modes:
        fns = {who: step_fns(model, batch, args.device)[mode == 'train step']
               for who, model in (('ours', ours), ('mmdet', theirs))}
        times: Dict[str, List[float]] = {'ours': [], 'mmdet': []}
        mems: Dict[str, List[float]] = {'ours': [], 'mmdet': []}
        for it in range(args.warmup + args.iters):
            order = ('ours', 'mmdet') if it % 2 == 0 else ('mmdet', 'ours')
            for who in order:  # alternate to spread drift (thermal, caches) evenly
                elapsed, peak = timed(fns[who], args.device)
                if it >= args.warmup:
                    times[who].append(elapsed)
                    mems[who].append(peak)
        ips = {w: args.batch_size / statistics.median(t) for w, t in times.items()}
        mem = {w: statistics.median(m) for w, m in mems.items()}
        peer = 'DETR' if VARIANTS[name].get('smca') else 'DeformableDETR'
        rows.append((f'{name} {mode} img/s', ips['ours'], ips['mmdet'],
                     paired_speed_ratio(times['ours'], times['mmdet']),
                     f'higher is better; peer {peer}'))
        rows.append((f'{name} {mode} peak MB', mem['ours'], mem['mmdet'],
                     mem['ours'] / mem['mmdet'] if mem['mmdet'] > 0 else float('nan'),
                     'lower is better'))
    return rows


# ---------------------------------------------------------------- --compile / --onnxruntime
def compiled_step_fns(model: torch.nn.Module, batch: Dict, device: str
                      ) -> Tuple[Callable[[], None], Callable[[], None]]:
    """:func:`step_fns` with the model's forward under ``torch.compile(dynamic=True)`` (the
    data preprocessor, backward and optimizer step stay eager)."""
    # The compiled wrapper forwards attributes (data_preprocessor, parameters, train/eval).
    return step_fns(torch.compile(model, dynamic=True), batch, device)


def first_call_seconds(fn: Callable[[], None], device: str) -> float:
    """Duration of the first call (for a compiled function: compilation plus one run)."""
    return timed(fn, device)[0]


def run_compile_variant(name: str, args: argparse.Namespace
                        ) -> List[Tuple[str, float, float, float, str]]:
    """Compiled vs eager, for ours and for mmdet's peer: paired speed ratios and compile time.

    Compile time is the first compiled call minus the median eager call. The eager models are
    the same instances (so the same weights) as the compiled ones.
    """
    import torch._dynamo
    ours, theirs = build_pair(VARIANTS[name], args.num_queries)
    ours.to(args.device), theirs.to(args.device)
    batch = make_batch(args.batch_size, *args.img_size)
    batch['inputs'] = batch['inputs'].to(args.device)
    rows = []
    modes = [m for m, skip in (('inference', args.skip_infer), ('train step', args.skip_train))
             if not skip]
    for mode in modes:
        index = mode == 'train step'
        for who, model in (('ours', ours), ('mmdet', theirs)):
            torch._dynamo.reset()
            eager = step_fns(model, batch, args.device)[index]
            compiled = compiled_step_fns(model, batch, args.device)[index]
            try:
                first = first_call_seconds(compiled, args.device)
            except Exception as exc:  # report, do not hide: mmdet's model may not compile
                rows.append((f'{name} {mode} {who} compiled', float('nan'), float('nan'),
                             float('nan'), f'compile failed: {type(exc).__name__}: '
                             f'{str(exc).splitlines()[0][:80]}'))
                continue
            times: Dict[str, List[float]] = {'eager': [], 'compiled': []}
            for it in range(args.warmup + args.iters):
                order = ('eager', 'compiled') if it % 2 == 0 else ('compiled', 'eager')
                for kind in order:
                    elapsed = timed(eager if kind == 'eager' else compiled, args.device)[0]
                    if it >= args.warmup:
                        times[kind].append(elapsed)
            eager_s = statistics.median(times['eager'])
            rows.append((f'{name} {mode} {who} compiled/eager img/s',
                         args.batch_size / statistics.median(times['compiled']),
                         args.batch_size / eager_s,
                         paired_speed_ratio(times['compiled'], times['eager']),
                         f'compiled vs eager, > 1: compile pays; compile '
                         f'{first - eager_s:.0f} s'))
    return rows


def run_onnxruntime_variant(name: str, args: argparse.Namespace
                            ) -> List[Tuple[str, float, float, float, str]]:
    """ONNX Runtime (CPU) vs PyTorch eager (and compiled) on one unpadded batch of our model."""
    import tempfile

    from mmdet_ddetr.deployment import (ExportableDetector, OrtDetector, export_onnx,
                                        sample_images)
    ours = build_pair(VARIANTS[name], args.num_queries)[0].eval()
    images = sample_images(args.batch_size, tuple(args.img_size))
    wrapper = ExportableDetector(ours).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = f'{tmp}/{name}.onnx'
        info = export_onnx(ours, path, shape=tuple(args.img_size), batch_size=args.batch_size)
        runtime = OrtDetector(path, threads=torch.get_num_threads())
        peers = {'eager': lambda: wrapper(images)}
        if args.compile:
            torch._dynamo.reset()
            compiled = torch.compile(wrapper, dynamic=True)
            peers['compiled'] = lambda: compiled(images)
        rows = []
        with torch.no_grad():
            for peer in peers.values():
                peer()  # warm-up / compilation
            for kind, peer in peers.items():
                times: Dict[str, List[float]] = {'ort': [], kind: []}
                for it in range(args.warmup + args.iters):
                    order = ('ort', kind) if it % 2 == 0 else (kind, 'ort')
                    for who in order:
                        fn = (lambda: runtime(images)) if who == 'ort' else peer
                        elapsed = timed(fn, 'cpu')[0]
                        if it >= args.warmup:
                            times[who].append(elapsed)
                rows.append((f'{name} inference onnxruntime/{kind} img/s',
                             args.batch_size / statistics.median(times['ort']),
                             args.batch_size / statistics.median(times[kind]),
                             paired_speed_ratio(times['ort'], times[kind]),
                             f'ORT CPU vs PyTorch {kind}; export {info["export_s"]:.0f} s'))
    return rows


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import mmdet_ddetr  # noqa: F401
    from mmengine.registry import DefaultScope
    DefaultScope.get_instance('benchmark_vs_mmdet', scope_name='mmdet')
    print(f'device={args.device} threads={torch.get_num_threads()} batch={args.batch_size} '
          f'img={args.img_size[0]}x{args.img_size[1]} queries={args.num_queries} '
          f'iters={args.iters} warmup={args.warmup} torch={torch.__version__}')
    rows = []
    for name in args.variants:
        rows += run_variant(name, args)
        if args.compile:
            rows += run_compile_variant(name, args)
        if args.onnxruntime:
            rows += run_onnxruntime_variant(name, args)
    width = max(len(r[0]) for r in rows)
    print(f'{"metric":<{width}}  {"ours":>10}  {"mmdet":>10}  {"ours/mmdet":>10}')
    if args.compile or args.onnxruntime:
        print('(compile rows: columns are compiled, eager, compiled/eager; onnxruntime rows: '
              'ORT, PyTorch, ORT/PyTorch)')
    for metric, ours, peer, ratio, note in rows:
        print(f'{metric:<{width}}  {ours:>10.3f}  {peer:>10.3f}  {ratio:>10.3f}  ({note})')


if __name__ == '__main__':
    main()
