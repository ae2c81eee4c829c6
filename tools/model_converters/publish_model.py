"""Publish a trained checkpoint for sharing and inference (mmdet's convention).

    python tools/model_converters/publish_model.py work_dirs/run/epoch_12.pth model.pth
    # -> model-1a2b3c4d.pth (the first 8 hex digits of its sha256)

Keeps the weights and ``meta`` (the config, the dataset's classes and palette: enough for
``DetInferencer(weights='model-1a2b3c4d.pth')`` or mmdet's ``demo/image_demo.py IMG
model-1a2b3c4d.pth`` to build the model from the file alone), drops the optimizer, the
``MessageHub`` logs and the scheduler states. The result loads with plain
``torch.load(f, weights_only=True)``. It is written to a temporary file and renamed, so a
failure leaves nothing; an existing output is never replaced.
"""
import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('src', help='checkpoint written by training (epoch_N.pth, iter_N.pth)')
    parser.add_argument('out', help='output name; the hash is inserted before the extension')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from mmdet_ddetr.converters import ConverterError
    from mmdet_ddetr.converters.publish import publish_checkpoint
    try:
        final, size, digest = publish_checkpoint(args.src, args.out)
    except (ConverterError, OSError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 1
    print(f'published {final} ({size / 2**20:.1f} MiB, sha256 {digest})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
