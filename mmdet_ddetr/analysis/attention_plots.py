"""Matplotlib (Agg) drawings of recorded attention, in the style of Deformable DETR Fig. 5/6.

All functions take numpy arrays in *network-input pixel* coordinates (the resized image the
model saw) and write one PNG atomically (temporary file + :func:`os.replace`).
"""
import os
import os.path as osp
from typing import List, Sequence, Tuple

import matplotlib

matplotlib.use('Agg')  # no display needed; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from ..utils.atomic_io import atomic_write  # noqa: E402

#: Colour map of attention weights (dark = low, bright = high).
CMAP = 'plasma'


def save_figure(fig, out_path: str, dpi: int = 110) -> str:
    """Save ``fig`` as PNG through a temporary file in the same folder, then close it."""
    os.makedirs(osp.dirname(osp.abspath(out_path)), exist_ok=True)
    try:
        atomic_write(out_path,
                     lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches='tight', format='png'))
    finally:
        plt.close(fig)
    return out_path


def _show(ax, image: np.ndarray, title: str = '') -> None:
    # Dimmed so that the coloured points stay readable on bright images.
    ax.imshow(image, alpha=0.55)
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(image.shape[0], 0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)


def _box(ax, box: Sequence[float], color: str, lw: float = 1.5, ls: str = '-') -> None:
    x1, y1, x2, y2 = box
    ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color,
                           linewidth=lw, linestyle=ls))


def _points(ax, locations: np.ndarray, weights: np.ndarray, norm) -> None:
    """Scatter points (N, 2) coloured and sized by weight, heaviest drawn last (on top)."""
    order = np.argsort(weights)
    sizes = 6 + 60 * norm(weights[order]).clip(0, 1)
    ax.scatter(locations[order, 0], locations[order, 1], c=weights[order], cmap=CMAP,
               norm=norm, s=sizes, edgecolors='black', linewidths=0.3)


def plot_sampling_grid(image: np.ndarray, rows: List[dict], level_names: Sequence[str],
                       out_path: str, title: str) -> str:
    """Rows of panels: one panel per level plus an "all levels" panel.

    Args:
        image: (H, W, 3) RGB uint8 network input.
        rows: Each a dict with ``label`` (row title), ``locations`` (heads, levels, points, 2),
            ``weights`` (heads, levels, points), ``reference`` ((levels, 2) or (2,)), and
            optional ``box`` / ``reference_box`` ((levels, 4)).
        level_names: Column titles, one per level.
        out_path: PNG to write.
        title: Figure title.

    Returns:
        str: ``out_path``.
    """
    num_levels = len(level_names)
    ncols = num_levels + 1
    fig, axes = plt.subplots(len(rows), ncols, figsize=(2.6 * ncols + 0.8, 2.6 * len(rows)),
                             squeeze=False)
    for r, row in enumerate(rows):
        loc, w = row['locations'], row['weights']
        # One colour scale per row: the weights of one query sum to 1 per head.
        norm = mcolors.Normalize(vmin=0.0, vmax=float(w.max()) if w.size else 1.0)
        ref = np.asarray(row['reference']).reshape(-1, 2)
        for c in range(ncols):
            ax = axes[r, c]
            lvl_title = level_names[c] if c < num_levels else 'all levels'
            _show(ax, image, f'{row["label"]}\n{lvl_title}' if c == 0 else lvl_title)
            if row.get('box') is not None:
                _box(ax, row['box'], 'lime')
            if c < num_levels:
                pts, wts = loc[:, c].reshape(-1, 2), w[:, c].reshape(-1)
                ref_c = ref[min(c, len(ref) - 1)]
            else:
                pts, wts = loc.reshape(-1, 2), w.reshape(-1)
                ref_c = ref[0]
            if row.get('reference_box') is not None:
                rb = np.asarray(row['reference_box']).reshape(-1, 4)
                _box(ax, rb[min(c, len(rb) - 1)] if c < num_levels else rb[0], 'cyan',
                     lw=1.0, ls='--')
            _points(ax, pts, wts, norm)
            ax.plot(ref_c[0], ref_c[1], marker='+', color='lime', markersize=12,
                    markeredgewidth=2.5)
        sm = plt.cm.ScalarMappable(norm=norm, cmap=CMAP)
        fig.colorbar(sm, ax=axes[r, :].tolist(), fraction=0.015, pad=0.01,
                     label='attention weight')
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_path)


def plot_smca_maps(image: np.ndarray, rows: List[dict], out_path: str, title: str) -> str:
    """For every detection, two rows of per-head maps: the Gaussian prior and the
    prior-modulated co-attention, overlaid on the image.

    Args:
        image: (H, W, 3) RGB uint8 network input.
        rows: Each a dict with ``label``, ``box`` (x1, y1, x2, y2), ``prior`` (heads, h, w)
            (``exp(log G)``, any scale), ``attn`` (heads, h, w) attention weights,
            ``extent`` (left, right, bottom, top) in input pixels of the feature grid, and
            ``centre`` (x, y) in input pixels (the shared Gaussian centre).
        out_path: PNG to write.
        title: Figure title.
    """
    heads = rows[0]['prior'].shape[0]
    fig, axes = plt.subplots(2 * len(rows), heads, figsize=(2.0 * heads + 0.6,
                                                            2.1 * 2 * len(rows)),
                             squeeze=False)
    for r, row in enumerate(rows):
        for kind, maps in (('prior', row['prior']), ('attn', row['attn'])):
            ax_row = 2 * r + (kind == 'attn')
            for h in range(heads):
                ax = axes[ax_row, h]
                name = 'Gaussian prior' if kind == 'prior' else 'modulated attn'
                head_title = f'head {h}'
                if h == 0:
                    head_title = f'{row["label"]}\n{name}, head 0'
                _show(ax, image, head_title)
                m = maps[h]
                # Each head's map is scaled to its own maximum: the shape matters, and the
                # priors of different heads differ by orders of magnitude at the edges.
                ax.imshow(m / max(float(m.max()), 1e-12), extent=row['extent'], cmap=CMAP,
                          alpha=0.6, vmin=0, vmax=1, interpolation='nearest')
                ax.set_xlim(0, image.shape[1])
                ax.set_ylim(image.shape[0], 0)
                _box(ax, row['box'], 'lime', lw=1.0)
                cx, cy = row['centre']
                ax.plot(cx, cy, marker='+', color='lime', markersize=9, markeredgewidth=2)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_path)


def plot_curves(series: List[Tuple[str, Sequence[float], Sequence[float]]], xlabel: str,
                ylabel: str, title: str, out_path: str, markers: bool = True) -> str:
    """Line plot of (name, xs, ys) series, used by the log and convergence plots."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, xs, ys in series:
        ax.plot(xs, ys, marker='o' if markers else None, markersize=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return save_figure(fig, out_path)


__all__ = ['save_figure', 'plot_sampling_grid', 'plot_smca_maps', 'plot_curves',
           'CMAP']
