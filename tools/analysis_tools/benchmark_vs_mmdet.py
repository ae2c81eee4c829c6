"""Benchmark mmdet_ddetr against mmdet's built-in counterpart, in one process, same inputs.

    python tools/analysis_tools/benchmark_vs_mmdet.py [--variants plain refine twostage]
        [--batch-size 2] [--img-size 512 672] [--iters 5] [--warmup 2] [--device cpu]
        [--precisions fp32 amp] [--json FILE] [--profile-dir DIR]

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

``--layers cpu-speed`` (the default) names the opt-in CPU speed types in our configs
(:data:`CPU_SPEED_TYPES`: ``LeanMultiheadAttention``, ``FastDropoutFFN``,
``FastDropoutMSDeformAttention``; same weights); ``--layers reference`` keeps the configs'
defaults (mmcv's attention and FFN, torch's dropout).

``--precisions fp32 amp`` measures both models again under automatic mixed precision (CUDA:
float16 autocast with a gradient scaler for training, mmdet's best; ``--amp-dtype bf16`` for
ours; CPU: bfloat16) and checks the GPU targets: training step with AMP >= 1.3x mmdet's best
(the faster of its fp32 and AMP runs), inference (our faster precision) >= 1.0x mmdet's best,
peak memory at each precision <= mmdet's. ``--json`` writes every row and target;
``--profile-dir`` writes a torch.profiler table of our model's top kernels for each missed
target (at most three).
"""
import argparse
import copy
import ctypes
import gc
import json
import os
import statistics
import threading
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

from mmdet_ddetr.utils import atomic_open
from mmdet_ddetr.utils.cli import add_verbose_argument, quiet_init_log

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
#: Reference type -> the opt-in CPU speed type (mmdet_ddetr/models/efficient) of the same
#: sub-module, with the same parameters and state-dict keys.
CPU_SPEED_TYPES = {
    'MultiheadAttention': 'LeanMultiheadAttention',
    'MSDeformAttention': 'FastDropoutMSDeformAttention',
    'FFN': 'FastDropoutFFN',
}


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
    parser.add_argument('--layers', choices=['cpu-speed', 'reference'], default='cpu-speed',
                        help='our layers: the opt-in CPU speed types (CPU_SPEED_TYPES) or the '
                        "configs' reference types (mmcv's attention and FFN)")
    parser.add_argument('--skip-train', action='store_true')
    parser.add_argument('--skip-infer', action='store_true')
    add_verbose_argument(parser)
    add_precision_args(parser)
    parser.add_argument('--compile', action='store_true',
                        help='also time ours and mmdet\'s model compiled as tools/train.py '
                        '--compile does (backbone + transformer, dynamic shapes) against the '
                        'eager models, with compile times')
    parser.add_argument('--onnxruntime', action='store_true',
                        help='also export ours to ONNX and time ONNX Runtime (CPU) inference '
                        'against PyTorch eager (and compiled with --compile), unpadded batch')
    args = parser.parse_args()
    if args.iters < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error('--iters and --batch-size must be >= 1, --warmup >= 0')
    return args


def select_layer_types(model_cfg: Dict, layers: str) -> None:
    """Name the CPU speed type of every encoder/decoder sub-module of our ``model_cfg`` (in
    place) when ``layers == 'cpu-speed'``; the reference types are those the layers build
    when the config names none."""
    if layers == 'reference':
        return
    smca = model_cfg['type'].startswith('SMCA')
    defaults = {  # (part, sub-module) -> the type built when the config names none
        ('encoder', 'self_attn_cfg'): 'MultiheadAttention' if smca else 'MSDeformAttention',
        ('decoder', 'self_attn_cfg'): 'MultiheadAttention',
        ('decoder', 'cross_attn_cfg'): 'MultiheadAttention' if smca else 'MSDeformAttention',
        ('encoder', 'ffn_cfg'): 'FFN',
        ('decoder', 'ffn_cfg'): 'FFN',
    }
    for (part, key), default in defaults.items():
        sub = model_cfg[part]['layer_cfg'][key]
        sub['type'] = CPU_SPEED_TYPES[sub.get('type', default)]


def build_smca_pair(num_queries: int,
                    layers: str = 'cpu-speed') -> Tuple[torch.nn.Module, torch.nn.Module]:
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
    select_layer_types(ours_cfg, layers)
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


def build_pair(variant: Dict, num_queries: int,
               layers: str = 'cpu-speed') -> Tuple[torch.nn.Module, torch.nn.Module]:
    """(ours, mmdet's) with identical hyper-parameters and, where the architectures allow,
    identical weights; ``layers`` as :func:`select_layer_types`."""
    from mmengine.config import Config

    from mmdet.registry import MODELS
    from mmdet_ddetr.converters import mmdet_to_ours

    if variant.get('smca'):
        return build_smca_pair(num_queries, layers)

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
    select_layer_types(cfg, layers)
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


def setup_pair(name: str, args: argparse.Namespace
               ) -> Tuple[torch.nn.Module, torch.nn.Module, Dict, List[str]]:
    """(ours, mmdet's peer, the batch, the modes to time) for a variant, on ``args.device``."""
    ours, theirs = build_pair(VARIANTS[name], args.num_queries, args.layers)
    ours.to(args.device), theirs.to(args.device)
    batch = make_batch(args.batch_size, *args.img_size)
    batch['inputs'] = batch['inputs'].to(args.device)
    modes = [m for m, skip in (('inference', args.skip_infer), ('train step', args.skip_train))
             if not skip]
    return ours, theirs, batch, modes


def run_variant(name: str, args: argparse.Namespace, make_fns: Optional[Callable] = None,
                label: str = '') -> List[Tuple[str, float, float, float, str]]:
    """Rows of one variant; ``make_fns(model, batch, device, who)`` gives the (inference,
    train step) closures (default :func:`step_fns`), ``label`` is appended to the variant."""
    ours, theirs, batch, modes = setup_pair(name, args)
    rows = []
    for mode in modes:
        fns = {who: (make_fns(model, batch, args.device, who) if make_fns else
                     step_fns(model, batch, args.device))[mode == 'train step']
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
        rows.append((f'{name}{label} {mode} img/s', ips['ours'], ips['mmdet'],
                     paired_speed_ratio(times['ours'], times['mmdet']),
                     f'higher is better; peer {peer}'))
        rows.append((f'{name}{label} {mode} peak MB', mem['ours'], mem['mmdet'],
                     mem['ours'] / mem['mmdet'] if mem['mmdet'] > 0 else float('nan'),
                     'lower is better'))
    return rows


# ------------------------------------------------------------------ precisions and GPU targets
PRECISIONS = ('fp32', 'amp')
#: Training step with AMP vs mmdet's best, inference vs mmdet's best, memory vs mmdet.
TARGETS = {'train step': 1.3, 'inference': 1.0}
MAX_PROFILES = 3


def add_precision_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--precisions', nargs='+', default=['fp32'], choices=PRECISIONS,
                        help='fp32 and/or amp (autocast; see --amp-dtype)')
    parser.add_argument('--amp-dtype', choices=['fp16', 'bf16'], default='fp16',
                        help='our autocast dtype on CUDA (mmdet always runs its best, fp16; '
                        'on the CPU both use bf16)')
    parser.add_argument('--json', help='write rows and targets to this JSON file')
    parser.add_argument('--profile-dir',
                        help='write a torch.profiler table of our model for each missed target')


def amp_dtype(device: str, who: str, args: argparse.Namespace) -> torch.dtype:
    if not device.startswith('cuda'):
        return torch.bfloat16  # CPU autocast: bf16 is the supported fast path
    if who == 'ours' and args.amp_dtype == 'bf16':
        return torch.bfloat16
    return torch.float16


def amp_step_fns(model: torch.nn.Module, batch: Dict, device: str, dtype: torch.dtype
                 ) -> Tuple[Callable[[], None], Callable[[], None]]:
    """(inference, train step) closures under autocast; float16 training uses a gradient
    scaler as mmengine's AmpOptimWrapper does."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'
    scaler = torch.amp.GradScaler(device_type, enabled=dtype == torch.float16)

    def autocast():
        return torch.autocast(device_type, dtype=dtype)

    def infer():
        model.eval()
        with torch.no_grad(), autocast():
            model(**model.data_preprocessor(copy.deepcopy(batch)), mode='predict')

    def train():
        model.train()
        data = model.data_preprocessor(copy.deepcopy(batch), training=True)
        with autocast():
            losses = model(**data, mode='loss')
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return infer, train


def run_variant_precisions(name: str, args: argparse.Namespace
                           ) -> List[Tuple[str, float, float, float, str]]:
    """Rows of one variant at every requested precision (labels '', ' amp')."""
    rows = []
    for precision in args.precisions:
        if precision == 'fp32':
            rows += run_variant(name, args)
        else:
            dtypes = {w: amp_dtype(args.device, w, args) for w in ('ours', 'mmdet')}
            rows += run_variant(
                name, args, label=' amp',
                make_fns=lambda model, batch, device, who: amp_step_fns(
                    model, batch, device, dtypes[who]))
    return rows


def parse_row(row: Tuple[str, float, float, float, str]) -> Dict:
    """A row as a dict: variant, precision, mode, kind ('speed' or 'memory') and values."""
    metric, ours, peer, ratio, note = row
    kind = 'speed' if metric.endswith(' img/s') else 'memory'
    head = metric[:-len(' img/s')] if kind == 'speed' else metric[:-len(' peak MB')]
    mode = 'train step' if head.endswith(' train step') else 'inference'
    head = head[:-len(mode) - 1]
    precision = 'amp' if head.endswith(' amp') else 'fp32'
    variant = head[:-len(' amp')] if precision == 'amp' else head
    return dict(metric=metric, variant=variant, precision=precision, mode=mode, kind=kind,
                ours=ours, mmdet=peer, ratio=ratio, note=note)


def check_targets(rows: List[Dict]) -> List[Dict]:
    """The GPU targets per variant and mode, from the rows of all precisions.

    Speed: ours (AMP for the training step, the faster precision for inference) over mmdet's
    faster precision, against :data:`TARGETS`. Memory: ours <= mmdet at each precision.
    """
    targets = []
    for variant in dict.fromkeys(r['variant'] for r in rows):
        for mode, needed in TARGETS.items():
            speed = {r['precision']: r for r in rows if r['variant'] == variant
                     and r['mode'] == mode and r['kind'] == 'speed'}
            if not speed:
                continue
            peer_best = max(r['mmdet'] for r in speed.values())
            if mode == 'train step':
                if 'amp' not in speed:
                    continue
                ours, precision = speed['amp']['ours'], 'amp'
            else:
                precision = max(speed, key=lambda p: speed[p]['ours'])
                ours = speed[precision]['ours']
            ratio = ours / peer_best
            targets.append(dict(variant=variant, mode=mode, kind='speed', precision=precision,
                                target=f'>= {needed}x mmdet best', ratio=ratio,
                                target_met=ratio >= needed))
        for r in rows:
            if r['variant'] == variant and r['kind'] == 'memory':
                targets.append(dict(variant=variant, mode=r['mode'], kind='memory',
                                    precision=r['precision'], target='<= mmdet',
                                    ratio=r['ratio'], target_met=r['ours'] <= r['mmdet']))
    return targets


def profile_ours(variant: str, mode: str, precision: str, args: argparse.Namespace,
                 path: str) -> None:
    """A torch.profiler table of three steps of our model, top kernels by self device time."""
    from torch.profiler import ProfilerActivity, profile
    ours, _ = build_pair(VARIANTS[variant], args.num_queries, args.layers)
    ours.to(args.device)
    batch = make_batch(args.batch_size, *args.img_size)
    batch['inputs'] = batch['inputs'].to(args.device)
    if precision == 'amp':
        fns = amp_step_fns(ours, batch, args.device, amp_dtype(args.device, 'ours', args))
    else:
        fns = step_fns(ours, batch, args.device)
    fn = fns[mode == 'train step']
    fn()  # warm-up outside the profile
    cuda = args.device.startswith('cuda')
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            fn()
        if cuda:
            torch.cuda.synchronize()
    # torch renamed the CUDA columns to 'device'; try the new name, then the old one.
    for sort in (['self_device_time_total', 'self_cuda_time_total'] if cuda
                 else ['self_cpu_time_total']):
        try:
            table = prof.key_averages().table(sort_by=sort, row_limit=30)
            break
        except (AttributeError, KeyError, ValueError):
            table = f'(profiler could not sort by {sort})'
    with open(path, 'w') as f:
        f.write(f'{variant} {mode} {precision} on {args.device}, batch {args.batch_size} at '
                f'{args.img_size[0]}x{args.img_size[1]}, 3 steps\n{table}\n')


def report_targets(rows: List[Tuple[str, float, float, float, str]],
                   args: argparse.Namespace) -> None:
    """Print the targets (with several precisions), profile misses, write the JSON."""
    parsed = [parse_row(r) for r in rows]
    targets = check_targets(parsed) if len(args.precisions) > 1 or \
        args.device.startswith('cuda') else []
    if targets:
        print('targets:')
        for t in targets:
            print(f"  {t['variant']:<14} {t['mode']:<10} {t['kind']:<6} {t['precision']:<4} "
                  f"{t['target']:<20} ratio {t['ratio']:.3f}  "
                  f"{'met' if t['target_met'] else 'MISSED'}")
    profiles = []
    if args.profile_dir:
        os.makedirs(args.profile_dir, exist_ok=True)
        missed = [t for t in targets if not t['target_met']]
        for t in list({(t['variant'], t['mode'], t['precision']): t
                       for t in missed}.values())[:MAX_PROFILES]:
            path = os.path.join(args.profile_dir, f"profile_{t['variant']}_"
                                f"{t['mode'].replace(' ', '-')}_{t['precision']}.txt")
            profile_ours(t['variant'], t['mode'], t['precision'], args, path)
            profiles.append(path)
            print(f'profile of the miss -> {path}')
    if args.json:
        meta = dict(device=args.device, torch=torch.__version__, batch_size=args.batch_size,
                    img_size=args.img_size, iters=args.iters, warmup=args.warmup,
                    precisions=args.precisions, amp_dtype=args.amp_dtype)
        if args.device.startswith('cuda'):
            meta['gpu'] = torch.cuda.get_device_name()
        with atomic_open(args.json, 'w') as f:
            json.dump(dict(meta=meta, rows=parsed, targets=targets, profiles=profiles), f,
                      indent=1)


# ---------------------------------------------------------------- --compile / --onnxruntime
def compiled_step_fns(model: torch.nn.Module, batch: Dict, device: str
                      ) -> Tuple[Callable[[], None], Callable[[], None]]:
    """:func:`step_fns` of a copy of ``model`` compiled as ``--compile`` in tools/train.py and
    tools/test.py does it (:func:`~mmdet_ddetr.engine.compile.compile_detector`: backbone + neck
    and transformer, ``dynamic=True``; data preprocessing, matching, losses, post-processing,
    backward and the optimizer step stay eager). mmdet's DETRs have the same two methods, so
    the peer is compiled the same way."""
    from mmdet_ddetr.engine.compile import compile_detector
    compiled = copy.deepcopy(model)
    compile_detector(compiled)
    return step_fns(compiled, batch, device)


def first_call_seconds(fn: Callable[[], None], device: str) -> float:
    """Duration of the first call (for a compiled function: compilation plus one run)."""
    return timed(fn, device)[0]


def run_compile_variant(name: str, args: argparse.Namespace
                        ) -> List[Tuple[str, float, float, float, str]]:
    """Compiled vs eager, for ours and for mmdet's peer: paired speed ratios and compile time.

    Compile time is the first compiled call minus the median eager call. The compiled models
    are copies of the eager ones (same weights).
    """
    import torch._dynamo
    ours, theirs, batch, modes = setup_pair(name, args)
    rows = []
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
    ours = build_pair(VARIANTS[name], args.num_queries, args.layers)[0].eval()
    images = sample_images(args.batch_size, tuple(args.img_size))
    wrapper = ExportableDetector(ours).eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = f'{tmp}/{name}.onnx'
        info = export_onnx(ours, path, shape=tuple(args.img_size), batch_size=args.batch_size)
        runtime = OrtDetector(path, threads=torch.get_num_threads())
        peers = {'eager': lambda: wrapper(images)}
        if args.compile:
            from mmdet_ddetr.ops import register_inductor_decomposition
            torch._dynamo.reset()
            register_inductor_decomposition()
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
    quiet_init_log(args.verbose)
    print(f'device={args.device} threads={torch.get_num_threads()} batch={args.batch_size} '
          f'img={args.img_size[0]}x{args.img_size[1]} queries={args.num_queries} '
          f'iters={args.iters} warmup={args.warmup} torch={torch.__version__}')
    rows = []
    for name in args.variants:
        rows += run_variant_precisions(name, args)
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
    report_targets(rows, args)


if __name__ == '__main__':
    main()
