"""The ``faceswap`` command: one subcommand per pipeline stage or tool.

Subcommands only parse arguments, call a plain function and report; heavy imports (torch, mlflow,
great_expectations, prefect) happen inside them so ``faceswap --help`` stays instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="faceswap",
    help="Face-swap training pipeline around the seed's 3×3-bottleneck autoencoder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameters file.")]


def fail(message: str, code: int = 1) -> None:
    """Print a clear error to stderr and exit non-zero (no traceback for expected failures)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _params(path: Path):
    from faceswap.config import ConfigError, load_params

    try:
        return load_params(path)
    except ConfigError as err:
        fail(str(err), 2)


@app.command("model-info")
def model_info(
    image_size: Annotated[int | None, typer.Option(help="Input side (default: params base.image_size).")] = None,
    width: Annotated[int | None, typer.Option(help="First encoder stage channels.")] = None,
    bottleneck_channels: Annotated[int | None, typer.Option(help="Bottleneck channels.")] = None,
    encoder_stages: Annotated[int | None, typer.Option(help="Pin the stride-2 encoder stages.")] = None,
    decoder: Annotated[str, typer.Option(help="Decoder up-sampling variant.")] = "resize_nearest",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Per-stage shapes, parameter counts, GFLOPs and compression ratio of the autoencoder."""
    from faceswap.model.info import describe_model, format_model_info

    p = _params(params) if params.exists() else None
    cfg_kwargs = {
        "image_size": image_size or (p.base.image_size if p else 64),
        "width": width or (p.model.width if p else 16),
        "bottleneck_channels": bottleneck_channels or (p.model.bottleneck_channels if p else 128),
        "encoder_stages": encoder_stages if encoder_stages is not None else (p.model.encoder_stages if p else None),
        "decoder": decoder,
    }
    try:
        info = describe_model(**cfg_kwargs)
    except ValueError as err:
        fail(str(err), 2)
    typer.echo(json.dumps(info, indent=2) if as_json else format_model_info(info))


@app.command("lpips")
def lpips_cmd(
    image_a: Annotated[Path, typer.Argument(help="First image.")],
    image_b: Annotated[Path, typer.Argument(help="Second image (same size).")],
    net: Annotated[str, typer.Option(help="Backbone: alex (evaluation) or vgg (loss).")] = "alex",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """LPIPS distance between two images, with the real ImageNet backbones (offline)."""
    from faceswap.imageio import ImageReadError, read_rgb
    from faceswap.metrics.lpips import LpipsWeightsError, lpips_distance

    if net not in ("alex", "vgg"):
        fail(f"--net must be 'alex' or 'vgg', got {net!r}", 2)
    try:
        a, b = read_rgb(image_a), read_rgb(image_b)
        if a.shape != b.shape:
            fail(f"images differ in size: {image_a} is {a.shape[1]}×{a.shape[0]}, {image_b} is {b.shape[1]}×{b.shape[0]}", 2)
        d = lpips_distance(a, b, net=net)
    except (ImageReadError, LpipsWeightsError) as err:
        fail(str(err), 2)
    if as_json:
        typer.echo(json.dumps({"image_a": str(image_a), "image_b": str(image_b), "net": net, "lpips": d}))
    else:
        typer.echo(f"LPIPS-{net}: {d:.4f}")


@app.command("checkerboard")
def checkerboard_cmd(
    images: Annotated[list[Path], typer.Argument(help="Images to score.")],
    reference: Annotated[
        list[Path] | None, typer.Option("--reference", help="Reference per image (ground truth or swap source).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Checkerboard-artifact score per image (and the excess over a reference, if given)."""
    from faceswap.imageio import ImageReadError, read_rgb
    from faceswap.metrics.checkerboard import checkerboard_report

    refs = reference or []
    if refs and len(refs) not in (1, len(images)):
        fail(f"give one --reference, or one per image ({len(images)}); got {len(refs)}", 2)
    p = _params(params) if params.exists() else None
    periods = p.metrics.checkerboard.periods if p else (2, 4, 8)
    rows = []
    try:
        for i, path in enumerate(images):
            ref_path = refs[0] if len(refs) == 1 else (refs[i] if refs else None)
            ref = read_rgb(ref_path) if ref_path else None
            row = checkerboard_report(read_rgb(path), reference=ref, periods=periods)
            rows.append({"image": str(path), "reference": str(ref_path) if ref_path else None, **row})
    except (ImageReadError, ValueError) as err:
        fail(str(err), 2)
    if as_json:
        typer.echo(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
        return
    for r in rows:
        line = f"{r['image']}: checkerboard {r['score']:.4f}"
        if r["reference"]:
            line += f"  reference {r['reference_score']:.4f}  excess {r['excess']:+.4f}"
        typer.echo(line)


@app.command("weights")
def weights_cmd(
    net: Annotated[list[str] | None, typer.Option(help="Backbones to prepare (default: alex and vgg).")] = None,
) -> None:
    """Fetch, verify (sha256) and convert the LPIPS backbones into the local cache; idempotent."""
    from faceswap.metrics.lpips import LpipsWeightsError, ensure_lpips_weights

    try:
        for name in net or ["alex", "vgg"]:
            path = ensure_lpips_weights(name)
            typer.echo(f"LPIPS-{name} weights ready: {path}")
    except LpipsWeightsError as err:
        fail(str(err), 2)


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
