#!/usr/bin/env python
"""Convert an official SMCA-DETR checkpoint (gaopengcuhk/SMCA-DETR, single scale) to mmdet_ddetr.

    python tools/model_converters/smca_official_to_mmdet_ddetr.py SRC.pth DST.pth [--overwrite]

The output is an mmengine checkpoint ``{'state_dict': ..., 'meta': {...}}`` for
``configs/smca_detr/smca-detr_r50_8xb2-50e_coco.py`` (official default: ``--dynamic_scale type3``,
``smooth 8``; ``meta.smca_hparams`` lists what the weights imply, check it against your config).

Safety (shared with the Deformable DETR converter, :mod:`mmdet_ddetr.converters.checkpoint_io`):
a corrupt or unrelated checkpoint, or one already in our layout, is an error and writes nothing
(so is a failed write, e.g. a full disk); an existing DST is never
replaced without ``--overwrite``; the file is written to a temporary name in DST's folder and
moved into place (no half-written output after a crash).
"""
import argparse
import os.path as osp
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('src', help='official checkpoint (e.g. checkpoint0049.pth)')
    parser.add_argument('dst', help='output mmdet_ddetr checkpoint (its folder must exist)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing dst')
    parser.add_argument(
        '--coco-classes', choices=['auto', '80', 'keep'], default='auto',
        help="'80': keep the 80 COCO classes (mmdet labels) of a 91-id official COCO head; "
        "'keep': copy the class layer as is; 'auto' (default): '80' when the head has 92 logits")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmdet_ddetr.converters import (COCO80_IDS, ConverterError, as_mmengine_checkpoint,
                                        check_destination, convert_smca_official_state_dict,
                                        infer_smca_hparams, load_checkpoint_file,
                                        refuse_our_layout, remap_coco91_to_80, save_atomic)
    from mmdet_ddetr.converters.smca import OUR_PREFIXES as SMCA_PREFIXES
    try:
        check_destination(args.dst, args.overwrite)  # fail before the (slow) load
        ckpt = load_checkpoint_file(args.src)
        refuse_our_layout(ckpt, SMCA_PREFIXES)
        state_dict = convert_smca_official_state_dict(ckpt)
        hparams = infer_smca_hparams(ckpt)
        rows = state_dict['bbox_head.fc_cls.weight'].shape[0]
        if args.coco_classes == '80' or (args.coco_classes == 'auto' and rows == 92):
            state_dict = remap_coco91_to_80(state_dict)
            hparams['num_classes'] = len(COCO80_IDS)
        save_atomic(as_mmengine_checkpoint(state_dict, dict(converted_from=osp.abspath(args.src),
                                                            smca_hparams=hparams)),
                    args.dst, overwrite=args.overwrite)
    except ConverterError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'converted {len(state_dict)} tensors -> {args.dst} ({hparams})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
