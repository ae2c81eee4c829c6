"""Convert a Deformable DETR checkpoint (official repository or mmdet's built-in
DeformableDETR) into mmdet_ddetr's DDETR layout.

    python tools/model_converters/ddetr_to_mmdet_ddetr.py SRC DST [--source auto|official|mmdet]
        [--coco91-to-80] [--proposal-scoring objectness|class0] [--overwrite]

Official COCO checkpoints carry 91 class logits indexed by COCO category id: pass
--coco91-to-80 to keep mmdet's 80 classes. For two-stage checkpoints, --proposal-scoring must
match the config you will load into (default configs use 'objectness': the encoder class branch
is reduced to logit 0, the only one the official code ranks proposals by, so predictions are
unchanged). Checkpoints of other architectures (e.g. mmdet's DINO) and checkpoints already in
our layout are refused. Nothing is written unless the conversion succeeds (a failed write, e.g.
a full disk, is a one-line error); DST is never overwritten
without --overwrite.
"""
import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('src', help='official or mmdet Deformable DETR checkpoint')
    parser.add_argument('dst', help='output checkpoint (loadable with load_from)')
    parser.add_argument('--source', choices=['auto', 'official', 'mmdet'], default='auto')
    parser.add_argument('--coco91-to-80', action='store_true',
                        help='official 91 COCO-id logits -> mmdet 80 classes')
    parser.add_argument('--proposal-scoring', choices=['objectness', 'class0'],
                        default='objectness',
                        help='two-stage encoder branch layout of the target config')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing DST')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmdet_ddetr.converters import (ConverterError, as_mmengine_checkpoint,
                                        check_destination, detect_source,
                                        load_checkpoint_file, mmdet_to_ours, official_to_ours,
                                        refuse_our_layout, save_atomic, state_dict_of)
    from mmdet_ddetr.converters.ddetr import OUR_PREFIXES as DDETR_PREFIXES
    try:
        check_destination(args.dst, args.overwrite)  # fail before the (slow) load
        ckpt = load_checkpoint_file(args.src)
        refuse_our_layout(ckpt, DDETR_PREFIXES)
        state_dict = state_dict_of(ckpt)
        source = detect_source(state_dict) if args.source == 'auto' else args.source
        if source == 'official':
            converted = official_to_ours(state_dict, args.proposal_scoring, args.coco91_to_80)
        else:
            if args.coco91_to_80:
                raise ConverterError('--coco91-to-80 applies to official checkpoints only')
            converted = mmdet_to_ours(state_dict, args.proposal_scoring)
        save_atomic(as_mmengine_checkpoint(converted, dict(converted_from=source,
                                                           source_file=args.src)),
                    args.dst, overwrite=args.overwrite)
    except ConverterError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'converted {source} checkpoint {args.src} -> {args.dst} ({len(converted)} tensors)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
