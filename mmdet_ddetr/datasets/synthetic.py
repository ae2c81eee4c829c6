"""Deterministic generator of a small COCO-format detection dataset of synthetic shapes.

The dataset is the project's embedded default: it needs no download, trains in minutes on a CPU
and still exercises what a detector has to cope with on real data:

* five shape classes whose identity is the *outline*, never the colour (colours are random);
* object sizes drawn log-uniformly from small to large (a few percent up to half the image);
* occlusion: later objects are painted over earlier ones, and the boxes are those of the
  *visible* pixels, as in COCO; an object is never hidden beyond ``min_visible``;
* textured backgrounds (gradients, smooth noise, stripes, checkerboards) plus pixel noise;
* separate train / val splits drawn from independent random streams.

Layout written under ``out_dir``::

    train/000000.png ...          val/000000.png ...
    annotations/train.json        annotations/val.json   (COCO: bbox xywh, area, iscrowd=0)
    manifest.json                 (parameters + counts; written last, marks a complete dataset)
    .mmdet_ddetr_synthetic        (written first: the generator owns the folder)

The generator writes only into a new or empty folder, or one with its marker file: a folder of
the user's own images is refused, never cleaned. Every file is written to a temporary name and
moved into place with :func:`os.replace`, so an interrupted run never leaves a truncated image
or JSON behind. Calling the generator again with
the same parameters is a no-op once ``manifest.json`` says the dataset is complete.

Only numpy and OpenCV are used, so the generator runs before mmdet/mmcv are even installed.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from dataclasses import asdict, dataclass
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..utils.atomic_io import atomic_open

# Bump when the rendering changes: a manifest from another version must not count as complete.
GENERATOR_VERSION = 1

CLASSES: Tuple[str, ...] = ('circle', 'square', 'triangle', 'star', 'ellipse')
SPLITS: Tuple[str, ...] = ('train', 'val')
MANIFEST_NAME = 'manifest.json'
# Written first into a folder the generator creates or finds empty: only such a folder is
# ever rewritten (stale digit-named images deleted, annotations replaced).
MARKER_NAME = '.mmdet_ddetr_synthetic'
# Distinct integer per split so that the train and val random streams never coincide.
_SPLIT_STREAM = {'train': 0, 'val': 1}


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of a synthetic dataset; equal configs produce byte-identical datasets.

    Attributes:
        seed: Base random seed.
        num_train: Number of training images.
        num_val: Number of validation images.
        img_size: Side of the square images, in pixels.
        min_objects: Fewest objects per image (at least 1).
        max_objects: Most objects attempted per image (placement may reject a few).
        min_rel_size: Smallest object extent as a fraction of ``img_size``.
        max_rel_size: Largest object extent as a fraction of ``img_size``.
        min_visible: Fraction of an object's pixels that must stay visible after later
            objects are painted over it; placements violating it are retried.
    """

    seed: int = 0
    num_train: int = 800
    num_val: int = 100
    img_size: int = 128
    min_objects: int = 1
    max_objects: int = 5
    min_rel_size: float = 0.1
    max_rel_size: float = 0.5
    min_visible: float = 0.5

    def validate(self) -> None:
        """Raise ``ValueError`` with a readable message for impossible parameters."""
        if self.num_train < 1 or self.num_val < 1:
            raise ValueError('num_train and num_val must be >= 1, got '
                             f'{self.num_train} and {self.num_val}')
        if self.img_size < 32:
            raise ValueError(f'img_size must be >= 32 pixels, got {self.img_size}')
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError('need 1 <= min_objects <= max_objects, got '
                             f'{self.min_objects} and {self.max_objects}')
        if not 0 < self.min_rel_size <= self.max_rel_size <= 0.9:
            raise ValueError('need 0 < min_rel_size <= max_rel_size <= 0.9, got '
                             f'{self.min_rel_size} and {self.max_rel_size}')
        if self.min_rel_size * self.img_size < 6:
            raise ValueError('objects smaller than 6 px cannot be told apart: raise img_size or '
                             f'min_rel_size (min_rel_size * img_size = '
                             f'{self.min_rel_size * self.img_size:.1f})')
        if not 0 < self.min_visible <= 1:
            raise ValueError(f'min_visible must be in (0, 1], got {self.min_visible}')

    def num_images(self, split: str) -> int:
        """Number of images of ``split`` ('train' or 'val')."""
        return {'train': self.num_train, 'val': self.num_val}[split]


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------

def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random textured background, float32 HxWx3 in [0, 255]."""
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0 = rng.uniform(0, 255, 3).astype(np.float32)
    c1 = rng.uniform(0, 255, 3).astype(np.float32)
    if kind == 0:  # linear gradient along a random direction
        ang = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(ang) + yy * np.sin(ang)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    elif kind == 1:  # smooth value noise: a coarse random grid upsampled bicubically
        cells = int(rng.integers(3, 9))
        grid = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
        t = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    elif kind == 2:  # stripes of random angle and period
        ang = rng.uniform(0, np.pi)
        period = rng.uniform(0.05, 0.3)
        phase = rng.uniform(0, 2 * np.pi)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(ang) + yy * np.sin(ang)) / period + phase)
    else:  # checkerboard with a random cell size
        cell = rng.uniform(0.06, 0.25)
        t = ((np.floor(xx / cell) + np.floor(yy / cell)) % 2).astype(np.float32)
    t = np.clip(t, 0, 1)[..., None]
    # Backgrounds are deliberately lower contrast than objects, otherwise stripes and checkers
    # would themselves look like squares.
    contrast = rng.uniform(0.2, 0.6)
    mid = (c0 + c1) / 2
    img = mid + (c0 - mid) * contrast * (1 - 2 * t)
    return img.astype(np.float32)


def _shape_polygon(rng: np.random.Generator, label: int, center: np.ndarray,
                   radius: float) -> np.ndarray:
    """Outline of a shape, (N, 2) float xy, with circumradius ``radius`` around ``center``.

    Every class is a polygon so that all of them are rasterised by the same anti-aliased code.
    """
    rot = rng.uniform(0, 2 * np.pi)
    name = CLASSES[label]
    if name == 'circle':
        ang = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        pts = np.stack([np.cos(ang), np.sin(ang)], 1) * radius
    elif name == 'ellipse':
        # Aspect ratio well away from 1 so that ellipses are not confused with circles.
        ang = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        ratio = rng.uniform(0.35, 0.6)
        pts = np.stack([np.cos(ang), ratio * np.sin(ang)], 1) * radius
    elif name == 'square':
        ang = np.arange(4) * (np.pi / 2) + np.pi / 4
        pts = np.stack([np.cos(ang), np.sin(ang)], 1) * radius
    elif name == 'triangle':
        ang = np.arange(3) * (2 * np.pi / 3) - np.pi / 2
        pts = np.stack([np.cos(ang), np.sin(ang)], 1) * radius
    else:  # 'star': five points, inner radius 45% of the outer one
        ang = np.arange(10) * (np.pi / 5) - np.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45) * radius
        pts = np.stack([np.cos(ang) * rad, np.sin(ang) * rad], 1)
    c, s = np.cos(rot), np.sin(rot)
    pts = pts @ np.array([[c, s], [-s, c]], dtype=np.float64)
    return pts + center


def _rasterize(poly: np.ndarray, size: int) -> np.ndarray:
    """Anti-aliased coverage of a polygon, float32 HxW in [0, 1]."""
    mask = np.zeros((size, size), np.uint8)
    shift = 4  # sub-pixel vertex precision (1/16 px) keeps small shapes faithful
    pts = np.round(poly * (1 << shift)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA, shift=shift)
    return mask.astype(np.float32) / 255.0


def _object_color(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour that stands out from ``under`` (mean RGB beneath the object)."""
    best, best_dist = None, -1.0
    for _ in range(16):
        color = rng.uniform(0, 255, 3).astype(np.float32)
        dist = float(np.linalg.norm(color - under))
        if dist >= 120:
            return color
        if dist > best_dist:
            best, best_dist = color, dist
    return best


def render_image(cfg: SyntheticConfig, split: str,
                 index: int) -> Tuple[np.ndarray, List[Dict]]:
    """Render one image and its visible-box annotations.

    The random stream depends only on ``(seed, split, index)``, so image ``i`` is the same
    whatever the number of images requested.

    Args:
        cfg: Dataset parameters.
        split: 'train' or 'val'.
        index: Image index within the split.

    Returns:
        ``(image, objects)``: a uint8 HxWx3 BGR image and one dict per object with
        ``label`` (0-based class index), ``bbox`` ([x, y, w, h] of the visible pixels) and
        ``area`` (visible pixel count), in painting order.
    """
    rng = np.random.default_rng([cfg.seed, _SPLIT_STREAM[split], index, GENERATOR_VERSION])
    size = cfg.img_size
    img = _background(rng, size)
    # owner[y, x] = index of the object visible at the pixel, -1 for background.
    owner = np.full((size, size), -1, np.int32)
    full_area: List[int] = []
    labels: List[int] = []
    n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    for _ in range(n_obj):
        for _attempt in range(20):
            label = int(rng.integers(len(CLASSES)))
            # Log-uniform extent: as many small objects as large ones in relative terms.
            extent = size * np.exp(rng.uniform(np.log(cfg.min_rel_size),
                                               np.log(cfg.max_rel_size)))
            radius = extent / 2
            # Keep the whole outline inside the image: boxes are never truncated by the border.
            center = rng.uniform(radius + 1, size - radius - 1, 2)
            cover = _rasterize(_shape_polygon(rng, label, center, radius), size)
            solid = cover >= 0.5
            if solid.sum() < 12:
                continue
            new_owner = owner.copy()
            new_owner[solid] = len(labels)
            # Reject placements that would hide too much of an earlier object.
            visible = np.bincount(new_owner[new_owner >= 0].ravel(),
                                  minlength=len(labels) + 1)
            if any(visible[k] < cfg.min_visible * full_area[k] for k in range(len(labels))):
                continue
            under = img[solid].mean(0)
            color = _object_color(rng, under)
            # Mild shading across the object so that it is not a perfectly flat patch.
            shade = rng.uniform(-25, 25, 3).astype(np.float32)
            ramp = np.linspace(-1, 1, size, dtype=np.float32)[None, :, None]
            fill = color + shade * ramp
            alpha = cover[..., None]
            img = img * (1 - alpha) + fill * alpha
            owner = new_owner
            full_area.append(int(solid.sum()))
            labels.append(label)
            break
    img += rng.normal(0, rng.uniform(2, 8), img.shape).astype(np.float32)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)

    objects = []
    for k, label in enumerate(labels):
        ys, xs = np.nonzero(owner == k)
        if len(xs) == 0:  # cannot happen with min_visible > 0, kept as a guard
            continue
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        objects.append(dict(label=label, bbox=[x0, y0, x1 - x0, y1 - y0], area=int(len(xs))))
    return img, objects


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------

def _write_json(path: str, obj) -> None:
    """Compact JSON, written atomically."""
    with atomic_open(path, 'w') as f:
        json.dump(obj, f, indent=None, separators=(',', ':'))


def image_name(index: int) -> str:
    """File name of image ``index`` inside its split folder."""
    return f'{index:06d}.png'


def _manifest(cfg: SyntheticConfig, counts: Dict[str, Dict[str, int]]) -> Dict:
    return dict(generator='mmdet_ddetr.datasets.synthetic', version=GENERATOR_VERSION,
                config=asdict(cfg), classes=list(CLASSES), splits=counts)


class ForeignFolderError(FileExistsError):
    """``out_dir`` holds files that the generator did not write; nothing was changed."""


def _is_own_legacy_dataset(out_dir: str) -> bool:
    """A dataset of a generator older than the marker file: its manifest names us."""
    try:
        with open(osp.join(out_dir, MANIFEST_NAME)) as f:
            return json.load(f).get('generator') == 'mmdet_ddetr.datasets.synthetic'
    except (OSError, ValueError, AttributeError):
        return False


def claim_folder(out_dir: str) -> None:
    """Make ``out_dir`` the generator's (create it, write the marker), or refuse it.

    Raises:
        ForeignFolderError: ``out_dir`` is not empty and has neither the marker nor our
            manifest.
    """
    marker = osp.join(out_dir, MARKER_NAME)
    if osp.isfile(marker):
        return
    if osp.isdir(out_dir) and os.listdir(out_dir) and not _is_own_legacy_dataset(out_dir):
        raise ForeignFolderError(
            f'{out_dir!r} is not empty and was not created by the synthetic generator (no '
            f'{MARKER_NAME} file): nothing was written, so that its images and annotations '
            'stay as they are. Pass a new or empty folder as --out.')
    os.makedirs(out_dir, exist_ok=True)
    with atomic_open(marker, 'w') as f:
        f.write('Created by mmdet_ddetr.datasets.synthetic: the generator may rewrite this '
                'folder.\n')


def is_complete(out_dir: str, cfg: SyntheticConfig) -> bool:
    """True when ``out_dir`` holds a finished dataset generated with exactly ``cfg``.

    The manifest is written last, so its presence with matching parameters means every
    image and annotation file was written; the files are checked to exist anyway so that
    a manually deleted image triggers regeneration.
    """
    path = osp.join(out_dir, MANIFEST_NAME)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    if manifest.get('version') != GENERATOR_VERSION or manifest.get('config') != asdict(cfg):
        return False
    for split in SPLITS:
        if not osp.isfile(osp.join(out_dir, 'annotations', f'{split}.json')):
            return False
        for i in range(cfg.num_images(split)):
            if not osp.isfile(osp.join(out_dir, split, image_name(i))):
                return False
    return True


def generate_split(out_dir: str, cfg: SyntheticConfig, split: str) -> Dict:
    """Render every image of ``split`` to disk and return its COCO annotation dict."""
    img_dir = osp.join(out_dir, split)
    os.makedirs(img_dir, exist_ok=True)
    wanted = {image_name(i) for i in range(cfg.num_images(split))}
    # Images left over from an earlier, larger dataset would be silently ignored by the
    # annotations but confuse anyone browsing the folder; remove our own stale files only.
    for name in os.listdir(img_dir):
        if name.endswith('.png') and name[:-4].isdigit() and name not in wanted:
            os.remove(osp.join(img_dir, name))
    images, annotations = [], []
    for i in range(cfg.num_images(split)):
        img, objects = render_image(cfg, split, i)
        ok, buf = cv2.imencode('.png', img)
        if not ok:
            raise RuntimeError(f'OpenCV failed to encode image {i} of {split}')
        with atomic_open(osp.join(img_dir, image_name(i))) as f:
            f.write(buf.tobytes())
        image_id = i + 1  # COCO ids start at 1
        images.append(dict(id=image_id, file_name=image_name(i), width=cfg.img_size,
                           height=cfg.img_size))
        for obj in objects:
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id,
                                    category_id=obj['label'] + 1, bbox=obj['bbox'],
                                    area=obj['area'], iscrowd=0))
    return dict(
        info=dict(description=f'mmdet_ddetr synthetic shapes ({split})',
                  version=str(GENERATOR_VERSION), seed=cfg.seed),
        licenses=[],
        images=images,
        annotations=annotations,
        categories=[dict(id=k + 1, name=name, supercategory='shape')
                    for k, name in enumerate(CLASSES)])


def generate_synthetic_dataset(out_dir: str,
                               cfg: Optional[SyntheticConfig] = None,
                               force: bool = False,
                               verbose: bool = False,
                               **kwargs) -> Dict:
    """Generate (or reuse) the synthetic COCO dataset under ``out_dir``.

    Args:
        out_dir: Dataset root, e.g. ``data/synthetic``.
        cfg: Parameters; when None they are built from ``kwargs`` (the
            :class:`SyntheticConfig` field names, e.g. ``seed=0, num_train=800``).
        force: Regenerate even if a complete dataset with the same parameters exists.
        verbose: Print progress.
        **kwargs: :class:`SyntheticConfig` fields, only when ``cfg`` is None.

    Returns:
        The manifest dict, with an extra key ``'generated'`` that is False when an existing
        complete dataset was reused.

    Raises:
        ValueError: On invalid parameters.
        ForeignFolderError: ``out_dir`` holds files the generator did not write.
    """
    if cfg is None:
        cfg = SyntheticConfig(**kwargs)
    elif kwargs:
        raise ValueError('pass either cfg or keyword parameters, not both')
    cfg.validate()
    manifest_path = osp.join(out_dir, MANIFEST_NAME)
    if not force and is_complete(out_dir, cfg):
        with open(manifest_path) as f:
            manifest = json.load(f)
        manifest['generated'] = False
        if verbose:
            print(f'[synthetic] {out_dir} is complete (seed {cfg.seed}); nothing to do')
        return manifest

    claim_folder(out_dir)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    # Drop the old manifest first: if this run is interrupted, the half-rewritten dataset
    # must not be mistaken for a complete one.
    if osp.exists(manifest_path):
        os.remove(manifest_path)
    counts = {}
    for split in SPLITS:
        if verbose:
            print(f'[synthetic] rendering {cfg.num_images(split)} {split} images '
                  f'({cfg.img_size}x{cfg.img_size}) into {osp.join(out_dir, split)}')
        coco = generate_split(out_dir, cfg, split)
        _write_json(osp.join(out_dir, 'annotations', f'{split}.json'), coco)
        counts[split] = dict(images=len(coco['images']), annotations=len(coco['annotations']))
    manifest = _manifest(cfg, counts)
    _write_json(manifest_path, manifest)
    manifest['generated'] = True
    if verbose:
        print(f'[synthetic] done: {counts}')
    return manifest
