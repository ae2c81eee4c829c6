#!/usr/bin/env python
"""Convert an official SMCA-DETR checkpoint (gaopengcuhk/SMCA-DETR, single scale) to mmdet_ddetr.

    python tools/model_converters/smca_official_to_mmdet_ddetr.py SRC.pth DST.pth [--overwrite]

The output is an mmengine checkpoint ``{'state_dict': ..., 'meta': {...}}`` for
``configs/smca_detr/smca-detr_r50_8xb2-50e_coco.py`` (official default: ``--dynamic_scale type3``,
``smooth 8``; ``meta.smca_hparams`` lists what the weights imply, check it against your config).

Safety: a corrupt or unrelated checkpoint is an error and writes nothing; an existing DST is
never replaced without ``--overwrite``; the file is written to a temporary name in DST's folder
and moved into place with ``os.replace`` (no half-written output after a crash).
"""
import argparse
import os
import os.path as osp
import sys
import tempfile

import torch

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..', '..'))
from mmdet_ddetr.models.smca.convert import (COCO_IDS, NotAnSMCACheckpoint,  # noqa: E402
                                             convert_smca_official_state_dict,
                                             extract_state_dict, infer_smca_hparams,
                                             remap_coco91_to_80)


def load_official(path: str):
    """Load without executing arbitrary pickles: only tensors/containers plus the
    ``argparse.Namespace`` the official training script stores under ``args``."""
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location='cpu', weights_only=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official checkpoint (e.g. checkpoint0049.pth)')
    parser.add_argument('dst', help='output mmdet_ddetr checkpoint')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing dst')
    parser.add_argument(
        '--coco-classes', choices=['auto', '80', 'keep'], default='auto',
        help="'80': keep the 80 COCO classes (mmdet labels) of a 91-id official COCO head; "
        "'keep': copy the class layer as is; 'auto' (default): '80' when the head has 92 logits")
    args = parser.parse_args(argv)

    if osp.exists(args.dst) and not args.overwrite:
        print(f'error: {args.dst} exists; pass --overwrite to replace it', file=sys.stderr)
        return 2
    try:
        ckpt = load_official(args.src)
    except Exception as exc:  # corrupt / truncated / not a torch file
        print(f'error: cannot read {args.src} as a torch checkpoint: {exc}', file=sys.stderr)
        return 1
    try:
        state_dict = convert_smca_official_state_dict(ckpt)
        hparams = infer_smca_hparams(extract_state_dict(ckpt))
        rows = state_dict['bbox_head.fc_cls.weight'].shape[0]
        if args.coco_classes == '80' or (args.coco_classes == 'auto' and rows == 92):
            state_dict = remap_coco91_to_80(state_dict)
            hparams['num_classes'] = len(COCO_IDS)
    except (NotAnSMCACheckpoint, ValueError) as exc:
        print(f'error: {args.src}: {exc}', file=sys.stderr)
        return 1

    out = dict(state_dict=state_dict,
               meta=dict(converted_from=osp.abspath(args.src), smca_hparams=hparams))
    dst_dir = osp.dirname(osp.abspath(args.dst))
    os.makedirs(dst_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.smca_convert_', suffix='.pth', dir=dst_dir)
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(out, f)
        os.replace(tmp, args.dst)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
    print(f'converted {len(state_dict)} tensors -> {args.dst} ({hparams})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
