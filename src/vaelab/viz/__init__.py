"""Figures and the HTML report."""

from vaelab.viz.figures import (
    figure_to_png,
    image_grid,
    latent_scatter_figure,
    loss_curves_figure,
    manifold_figure,
    normal_quantile_grid,
    reconstructions_figure,
    save_figure,
    tile_images,
)
from vaelab.viz.report import Section, format_value, render_report, write_report

__all__ = [
    "Section",
    "figure_to_png",
    "format_value",
    "image_grid",
    "latent_scatter_figure",
    "loss_curves_figure",
    "manifold_figure",
    "normal_quantile_grid",
    "reconstructions_figure",
    "render_report",
    "save_figure",
    "tile_images",
    "write_report",
]
