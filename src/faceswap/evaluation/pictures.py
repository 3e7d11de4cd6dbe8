"""The pictures of an evaluation (``reports/<variant>/``): preview grid, zoomed flattest region, error spectrum."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from faceswap.pictures import mean_error_spectrum, preview_grid, save_spectrum_figure, zoom_panel

if TYPE_CHECKING:
    from faceswap.config import EvaluateParams
    from faceswap.evaluation.metrics import Evaluation

PICTURES = ("preview.png", "zoom.png", "spectrum.png")


def write_pictures(ev: Evaluation, identities: tuple[str, str], cfg: EvaluateParams, out_dir: Path, title: str) -> None:
    from faceswap.imageio import write_rgb

    outs = ev.outputs
    write_rgb(out_dir / "preview.png", preview_grid(outs, identities, cfg.preview_rows))
    write_rgb(out_dir / "zoom.png", zoom_panel(outs, identities, cfg.zoom_size, cfg.zoom_factor))
    spectra = {i: mean_error_spectrum(outs[f"truth_{i}"], outs[f"recon_{i}"]) for i in identities}
    save_spectrum_figure(out_dir / "spectrum.png", spectra, title)
