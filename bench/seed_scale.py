"""The seed's experiment at the seed's scale, prepared on a CPU for one run on a machine with a GPU (issue 15).

Three steps, two machines:

    # here (CPU, beforehand): the demo faces' frame regions, LPIPS weights as float16, the wheels a bare Python lacks
    python bench/seed_scale.py pack --out .seedpack
    # on a machine with a GPU (bench/gpu.sh runs it there, with the other GPU checks)
    python bench/seed_scale.py run --pack .seedpack --out $OUT [--mode seed256|bottleneck512] [--budget-s 300]
    # here again, on what came back: identity transfer of the swaps with the dlib descriptor
    python bench/seed_scale.py identity --pack .seedpack --results DIR

``pack`` stores, per accepted demo face, the region of its frame that the aligned crop covers (JPEG q95) and
the similarity that aligns it, so crops at any size (256², 512², 32² in the tests) are re-aligned from frame
pixels by the align stage's own ``warp_face`` — one pack of ~6 MiB serves both resolutions, where 256² and 512²
crops would take ~35 MiB. ``run`` re-aligns the crops, then for every configuration (``seed256``: each decoder
variant at 256², width 128, 3×3×1024, the seed profile's loss L1 + 0.1 × LPIPS-vgg on every image;
``bottleneck512``: one variant at 512² with 4 encoder stages (7×7 bottleneck) and the derived 5 (3×3)) trains
with the training stage's ``train()`` for the same number of steps, chosen so all of them fit ``--budget-s``
(from a short throughput calibration of each), and evaluates it with the evaluation stage's ``evaluate_model``
and ``write_pictures`` on the test faces (grid/checkerboard scores, LPIPS-alex, PSNR, SSIM, cycle LPIPS, preview
grid, zoomed flattest crop, error spectrum). Landmarks (MTCNN weights) and identity (dlib) are not used there:
the swaps come back as JPEG q95 and ``identity`` scores them here with the evaluation's ``identity_metrics``
against a reference built from the same re-aligned crops. Outputs in ``--out``: ``<mode>_<name>.tar`` per
configuration (metrics.json, train.json, preview/zoom/spectrum PNGs, the last training preview, swaps/) and
``<mode>_summary.md``: one file per configuration, easy to copy back to the CPU machine.

A bench script, not a pipeline stage: it runs on the GPU machine, outside DVC's graph, like gpu_train.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FACES = "faces.parquet"
REGIONS = "regions"
WHEELS = "wheels"
PACK_INFO = "pack.json"
# what a bare GPU image's Python (torch, numpy, pandas, pyarrow, opencv, pillow, pyyaml, tqdm, matplotlib) lacks
DEVICE_WHEELS = ("pydantic", "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions", "lpips")
MODES = {"seed256": ("seed-256", 256), "bottleneck512": ("seed-512", 512)}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- pack (here, on CPU) ------------------------------------------------------------------------------


def _lock_pin(name: str) -> str:
    norm = name.lower().replace("_", "-")
    for line in (REPO / "requirements" / "lock.txt").read_text().splitlines():
        pkg, _, ver = line.strip().partition("==")
        if ver and pkg.lower().replace("_", "-") == norm:
            return f"{pkg}=={ver.split()[0]}"
    raise SystemExit(f"requirements/lock.txt pins no {name}")


def download_wheels(dest: Path) -> None:
    """The wheels of DEVICE_WHEELS at the lock's versions, for a CPython 3.12 on x86-64."""
    plats = [a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64") for a in
             ("--platform", p)]
    for name in DEVICE_WHEELS:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", *plats, "-d", str(dest), _lock_pin(name)]
        subprocess.run(cmd, check=True)


def pack(manifest: Path, frames: Path, out: Path, quality: int = 95, nets: tuple[str, ...] = ("vgg", "alex"),
         wheels: bool = True, margin: int = 4) -> dict[str, Any]:
    """Write the pack (see the module doc) to ``out`` through a temp folder, replaced in one step."""
    import cv2
    import pandas as pd
    import torch

    from faceswap.data.geometry import apply_affine
    from faceswap.files import file_sha256
    from faceswap.imageio import read_rgb
    from faceswap.metrics.lpips_weights import ensure_lpips_weights

    df = pd.read_parquet(manifest)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / REGIONS).mkdir(parents=True)
    rows = []
    for r in df.itertuples():
        frame = read_rgb(frames / r.frame_path)
        m = np.asarray(np.stack(r.matrix).tolist(), float) / float(r.width)  # frame → crop of side 1
        corners = apply_affine(cv2.invertAffineTransform(m), np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float))
        h, w = frame.shape[:2]
        x0, y0 = (max(0, math.floor(v) - margin) for v in corners.min(0))
        x1, y1 = min(w, math.ceil(corners[:, 0].max()) + margin), min(h, math.ceil(corners[:, 1].max()) + margin)
        m[:, 2] += m[:, :2] @ np.array([x0, y0], float)  # region pixels → crop of side 1
        rel = f"{REGIONS}/{r.face_id}.jpg"
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise SystemExit(f"could not encode the region of {r.face_id}")
        (tmp / rel).write_bytes(buf.tobytes())
        rows.append({"face_id": r.face_id, "identity": r.identity, "split": r.split, "region": rel,
                     "matrix": m.reshape(-1).tolist()})
    pd.DataFrame(rows).to_parquet(tmp / FACES, index=False)
    files: dict[str, str] = {}
    for net in nets:
        sd = torch.load(ensure_lpips_weights(net), map_location="cpu", weights_only=True)
        # the backbone as float16 (the 64 MiB transfer cap), the linear layers and constants exactly
        half = {k: v.half() if k.startswith("net.") else v for k, v in sd.items()}
        name = f"lpips_{net}.f16.pt"
        torch.save(half, tmp / name)
        files[name] = file_sha256(tmp / name)
    if wheels:
        download_wheels(tmp / WHEELS)
    info = {"source_manifest": str(manifest), "source_sha256": file_sha256(manifest), "faces": len(rows),
            "per_split": {f"{i}/{s}": int(n) for (i, s), n in df.groupby(["identity", "split"]).size().items()},
            "jpeg_quality": quality, "lpips": files,
            "bytes": sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())}
    (tmp / PACK_INFO).write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return info


# --- on the GPU machine -------------------------------------------------------------------------------------


def install_lpips(pack_dir: Path) -> None:
    """Put the pack's LPIPS weights, upcast to fp32, where ``load_lpips`` finds them (unless a cache has them)."""
    import torch

    from faceswap.files import file_sha256
    from faceswap.metrics import lpips_weights as fw

    info = json.loads((pack_dir / PACK_INFO).read_text())
    for name, digest in info["lpips"].items():
        net = name.split("_")[1].split(".")[0]
        if fw.is_cached(net):
            continue
        src = pack_dir / name
        if file_sha256(src) != digest:
            raise SystemExit(f"{src}: sha256 differs from {pack_dir / PACK_INFO}; pack it again")
        sd = {k: v.float() for k, v in torch.load(src, map_location="cpu", weights_only=True).items()}
        fw.store_weights(net, sd, f"{name} (float16 backbone, upcast)")


def materialize(pack_dir: Path, size: int, dest: Path, splits: tuple[str, ...] = ("train", "val", "test")) -> Path:
    """Re-align every packed face at ``size``² (align's warp_face), as PNG crops + a manifest; returns it."""
    import cv2
    import pandas as pd

    from faceswap.data.geometry import warp_face
    from faceswap.imageio import write_rgb

    df = pd.read_parquet(pack_dir / FACES)
    df = df[df["split"].isin(splits)]
    paths = []
    for r in df.itertuples():
        region = cv2.cvtColor(cv2.imread(str(pack_dir / r.region)), cv2.COLOR_BGR2RGB)
        crop = warp_face(region, np.asarray(r.matrix, float).reshape(2, 3) * size, size)
        rel = f"faces/{r.identity}/{r.face_id}.png"  # relative to the manifest's folder
        write_rgb(dest / rel, crop)
        paths.append(rel)
    manifest = dest / FACES
    df.assign(path=paths, width=size, height=size)[["face_id", "identity", "split", "path", "width", "height"]] \
        .to_parquet(manifest, index=False)
    return manifest


def seed_params(mode: str, overrides: dict[str, Any]) -> Any:
    """params.yaml + the mode's profile (profiles/seed-*.yaml) + the run's own overrides."""
    import yaml

    from faceswap.config import load_params, parse_params, set_key, with_overrides

    profile, _ = MODES[mode]
    raw = load_params(REPO / "params.yaml").model_dump(by_alias=True)
    for key, value in yaml.safe_load((REPO / "profiles" / f"{profile}.yaml").read_text()).items():
        set_key(raw, key, value)  # a profile's nulls count (lpips_images: null = every image)
    return with_overrides(parse_params(raw, profile), overrides, f"seed_scale {mode}")


def _calibrate(params: Any, variant: str, stages: int | None, device: Any, steps: int) -> float:
    """Training images/s of one configuration over a few steps of the training step (gpu_train.measure)."""
    import dataclasses

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from faceswap.model import ModelConfig
    from gpu_train import measure, synthetic_faces

    n, t = params.base.image_size, params.train
    cfg = dataclasses.replace(ModelConfig.from_params(params, variant), encoder_stages=stages)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    r = measure(cfg, synthetic_faces(n, 2 * t.batch_size, identities=cfg.identities), t.loss, batch=t.batch_size,
                steps=steps, warmup=2, workers=0 if device.type == "cpu" else min(8, (os.cpu_count() or 2) - 1),
                device=device, dtype=dtype, train=t)
    return r["images_per_s"]


def _tar_dir(folder: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".part")
    with tarfile.open(tmp, "w") as tar:
        tar.add(folder, arcname=folder.name)
    os.replace(tmp, dest)


def _write_jpeg(path: Path, image: np.ndarray, quality: int = 95) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(image)).save(path, quality=quality)


TABLE = [("steps", "steps", ".0f"), ("train_s", "train s", ".0f"), ("images_per_s", "images/s", ".0f"),
         ("recon_lpips", "LPIPS-alex", ".4f"), ("recon_psnr", "PSNR dB", ".2f"), ("recon_ssim", "SSIM", ".4f"),
         ("recon_checkerboard_excess", "grid excess recon", ".4f"),
         ("swap_checkerboard_excess", "grid excess swap", ".4f"), ("cycle_lpips", "cycle LPIPS", ".4f"),
         ("swap_identity_success", "identity transfer", ".2f"), ("swap_identity_margin", "identity margin", ".3f")]


def summary_table(rows: list[dict[str, Any]], title: str) -> str:
    from faceswap.tables import markdown_table

    cells = [[r["name"], *("n/a" if r.get(k) is None else format(r[k], f) for k, _, f in TABLE)] for r in rows]
    table = markdown_table(["configuration", *(h for _, h, _ in TABLE)], cells, ["left", *["right"] * len(TABLE)])
    return f"## {title}\n\n{table}\n"


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from faceswap.checkpoint import load_model
    from faceswap.evaluation.faces import load_eval_faces
    from faceswap.evaluation.metrics import evaluate_model
    from faceswap.evaluation.pictures import write_pictures
    from faceswap.model import UPSAMPLERS, derive_geometry
    from faceswap.pictures import to_uint8
    from faceswap.stages.evaluate import landmark_detector
    from faceswap.train import train

    t0 = time.perf_counter()
    pack_dir, out = Path(args.pack), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    install_lpips(pack_dir)
    size = args.image_size or MODES[args.mode][1]
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="seed-scale-"))
    manifest = materialize(pack_dir, size, work / "data")
    _log(f"{args.mode}: {size}² crops re-aligned in {time.perf_counter() - t0:.1f} s")
    base = {"base.image_size": size, "model.width": args.width, "model.bottleneck_channels": args.bottleneck,
            "train.batch_size": args.batch or None, "train.workers": args.workers, "train.compile": False,
            "train.mlflow": False,
            "train.val_images": args.val_images, "train.preview_rows": 4, "train.log_every": 50,
            "evaluate.mlflow": False, "evaluate.landmarks": False, "evaluate.identity": False,
            "evaluate.max_faces": args.eval_faces}
    params = seed_params(args.mode, base | {"train.steps": 2, "train.warmup_steps": 1})
    batch = params.train.batch_size
    variants = args.variants or (list(UPSAMPLERS) if args.mode == "seed256" else ["resize_nearest"])
    if args.mode == "seed256":
        configs = [(v, v, None) for v in variants]
    else:  # the seed's day-13 failure: the 256 network's 4 stages at 512 (7×7) vs the derived stages (3×3)
        configs = [(f"{v}_stages{s}", v, s) for v in variants for s in (size.bit_length() - 6, None)]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rates = {}
    if args.rates and Path(args.rates).is_file():
        rates = {r["variant"]: r["images_per_s"] for r in json.loads(Path(args.rates).read_text())["rows"]}
    if args.steps:
        steps = args.steps
    else:  # gpu_train.json's rates are for 256² with 32 faces per identity: used for that configuration only
        use = args.mode == "seed256" and batch == 32 and size == 256
        secs = sum(2 * batch / (rates[v] if use and v in rates else
                                _calibrate(params, v, s, device, args.calibration_steps)) for _, v, s in configs)
        steps = max(1, int(args.budget_s / secs))
    _log(f"{args.mode}: {len(configs)} configurations × {steps} steps of {2 * batch} images "
         f"({time.perf_counter() - t0:.0f} s so far)")
    rows = []
    for name, variant, stages in configs:
        if args.deadline_s and time.perf_counter() - t0 > args.deadline_s:
            _log(f"{name}: skipped, past the deadline of {args.deadline_s} s")
            continue
        p = seed_params(args.mode, base | {"train.steps": steps, "train.warmup_steps": min(1000, steps // 10),
                                           "train.val_every": steps, "train.checkpoint_every": steps,
                                           "train.preview_every": steps, "train.keep_checkpoints": 1,
                                           "model.encoder_stages": stages})
        folder = work / "runs" / name
        shutil.rmtree(folder, ignore_errors=True)
        t_train = time.perf_counter()
        result = train(p, variant, folder / "model", manifest=manifest, faces_dir=None, progress=False)
        train_s = time.perf_counter() - t_train
        model, _ = load_model(folder / "model" / "model.pt", device)
        geo = derive_geometry(model.config)
        faces = load_eval_faces(manifest, tuple(model.config.identities), size, None, p.evaluate.max_faces)
        ev = evaluate_model(model, faces, p.evaluate, p.metrics.checkerboard.periods, str(device),
                            landmark_detector(p.evaluate, str(device)))
        report = folder / f"{args.mode}_{name}"
        report.mkdir(parents=True)
        write_pictures(ev, faces.identities, p.evaluate, report, f"{name} ({size}², {steps} steps)")
        previews = sorted((folder / "model" / "previews").glob("*.png"))
        if previews:
            shutil.copy(previews[-1], report / "train_preview.png")
        for ident in faces.identities:
            for fid, im in zip(faces.face_ids[ident], to_uint8(ev.outputs[f"swap_{ident}"]), strict=True):
                _write_jpeg(report / "swaps" / ident / f"{fid}.jpg", im)
        row = {"name": name, "variant": variant, "encoder_stages": geo.encoder_stages,
               "bottleneck": f"{geo.bottleneck_size}×{geo.bottleneck_size}×{model.config.bottleneck_channels}",
               "image_size": size, "steps": result.outcome.step, "batch_images": 2 * batch,
               "train_s": train_s, "images_per_s": result.speed.images_per_s, "gpu_minutes": train_s / 60,
               "best_val_loss": result.best.val_loss,
               "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", **ev.metrics}
        (report / "metrics.json").write_text(json.dumps(row, indent=2) + "\n")
        (report / "per_image.json").write_text(json.dumps(ev.per_image) + "\n")
        _tar_dir(report, out / f"{report.name}.tar")
        rows.append(row)
        _log(f"{name}: {result.outcome.step} steps in {train_s:.0f} s ({result.speed.images_per_s:.0f} images/s), "
             "recon LPIPS "
             f"{ev.metrics['recon_lpips']:.4f}, swap grid excess {ev.metrics['swap_checkerboard_excess']:.4f} "
             f"({time.perf_counter() - t0:.0f} s so far)")
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    title = f"{args.mode}: {size}², {steps} steps × {2 * batch} images (identity: `seed_scale.py identity`)"
    (out / f"{args.mode}_summary.md").write_text(summary_table(rows, title))
    _log(f"{args.mode}: done in {time.perf_counter() - t0:.0f} s")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def prepare(args: argparse.Namespace) -> Path:
    """A params file for ``faceswap train --params`` at the mode's profile on the pack's re-aligned crops, every
    path below ``--out`` (what bench/gpu.sh runs under torchrun); returns the params file."""
    import yaml

    out = Path(args.out).resolve()
    size = args.image_size or MODES[args.mode][1]
    install_lpips(Path(args.pack))  # the profile's loss term
    manifest = materialize(Path(args.pack), size, out / "data")
    stated = yaml.safe_load((REPO / "params.yaml").read_text())["paths"]
    overrides: dict[str, Any] = {f"paths.{k}": str(out / v) for k, v in stated.items()}
    overrides |= {"paths.accepted": str(manifest), "paths.faces": str(manifest.parent), "base.image_size": size,
                  "train.mlflow": False, "train.compile": False, "evaluate.mlflow": False}
    for item in args.set or []:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    p = seed_params(args.mode, overrides)
    path = out / "params.yaml"
    path.write_text(yaml.safe_dump(p.model_dump(by_alias=True, mode="json"), sort_keys=False))
    _log(f"{args.mode}: {path} ({size}², faces from {manifest})")
    return path


# --- back here: identity ---------------------------------------------------------------------------------


def identity(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Identity transfer of the returned swaps (dlib descriptor; evaluation's identity_metrics), per tar."""
    import torch

    from faceswap.evaluation.metrics import identity_metrics
    from faceswap.identity_reference import build_reference
    from faceswap.imageio import read_rgb

    results = Path(args.results)
    tars = sorted(results.glob(f"{args.mode}_*.tar"))
    if not tars:
        raise SystemExit(f"no {args.mode}_*.tar in {results}")
    rows, refs = [], {}
    with tempfile.TemporaryDirectory(prefix="seed-identity-") as tmp:
        for path in tars:
            with tarfile.open(path) as tar:
                tar.extractall(tmp, filter="data")
            folder = Path(tmp) / path.stem
            row = json.loads((folder / "metrics.json").read_text())
            size = int(row["image_size"])
            if size not in refs:
                manifest = materialize(Path(args.pack), size, Path(tmp) / f"data{size}", ("train", "test"))
                p = seed_params(args.mode, {"base.image_size": size})
                refs[size] = build_reference(p, manifest, None)
            ref = refs[size]
            outs = {}
            for ident in ref.identities:
                ims = np.stack([read_rgb(f) for f in sorted((folder / "swaps" / ident).glob("*.jpg"))])
                outs[f"swap_{ident}"] = torch.from_numpy(ims).permute(0, 3, 1, 2).float() / 255
            per: dict[str, list[float]] = {}
            row.update(identity_metrics(outs, ref.identities, ref, per))
            (results / f"{path.stem}.identity.json").write_text(json.dumps(
                {k: row[k] for k in row if "identity" in k} | {"per_face": per}, indent=2) + "\n")
            rows.append(row)
    title = f"{args.mode}: {rows[0]['image_size']}², {rows[0]['steps']} steps × {rows[0]['batch_images']} images"
    (results / f"{args.mode}_summary_identity.md").write_text(summary_table(rows, title))
    print(summary_table(rows, title))
    return rows


def main(argv: list[str] | None = None) -> Any:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack", help="here: frame regions + LPIPS float16 + wheels into one folder")
    a.add_argument("--manifest", type=Path, default=None, help="accepted faces (default: params paths.accepted)")
    a.add_argument("--frames", type=Path, default=None, help="extracted frames (default: params paths.frames)")
    a.add_argument("--out", type=Path, default=Path(".seedpack"))
    a.add_argument("--quality", type=int, default=95)
    a.add_argument("--no-wheels", action="store_true")
    a.add_argument("--nets", nargs="+", default=["vgg", "alex"])
    r = sub.add_parser("run", help="on the GPU machine: train and evaluate every configuration")
    r.add_argument("--pack", default=".seedpack")
    r.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    r.add_argument("--mode", choices=list(MODES), default="seed256")
    r.add_argument("--variants", nargs="+", default=None)
    r.add_argument("--budget-s", type=float, default=300.0, help="training seconds for all configurations together")
    r.add_argument("--deadline-s", type=float, default=0.0, help="skip configurations not started by then (0: none)")
    r.add_argument("--steps", type=int, default=0, help="steps per configuration (0: from --budget-s)")
    r.add_argument("--calibration-steps", type=int, default=6)
    r.add_argument("--image-size", type=int, default=0, help="0: the mode's (256 or 512)")
    r.add_argument("--width", type=int, default=None, help="default: the profile's (128)")
    r.add_argument("--bottleneck", type=int, default=None, help="default: the profile's (1024)")
    r.add_argument("--batch", type=int, default=0, help="faces per identity per step (0: the profile's, 32 / 12)")
    r.add_argument("--workers", type=int, default=None, help="data-loader workers (default: the profile's, CPUs - 1)")
    r.add_argument("--rates", default=None, help="gpu_train.json of this machine: images/s per variant, no calibration")
    r.add_argument("--val-images", type=int, default=32)
    r.add_argument("--eval-faces", type=int, default=200, help="test faces per identity evaluated")
    r.add_argument("--work", default=None, help="working folder (default: a temp folder, removed)")
    n = sub.add_parser("install", help="on the GPU machine: the pack's LPIPS weights into the cache")
    n.add_argument("--pack", default=".seedpack")
    q = sub.add_parser("prepare", help="a params file for `faceswap train --params` on the pack's crops")
    q.add_argument("--pack", default=".seedpack")
    q.add_argument("--out", required=True, help="folder for the crops, the params file and every run output")
    q.add_argument("--mode", choices=list(MODES), default="seed256")
    q.add_argument("--image-size", type=int, default=0, help="0: the mode's (256 or 512)")
    q.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="more params overrides (YAML values)")
    i = sub.add_parser("identity", help="here: identity transfer of the swaps that came back")
    i.add_argument("--pack", default=".seedpack")
    i.add_argument("--results", required=True)
    i.add_argument("--mode", choices=list(MODES), default="seed256")
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        from faceswap.config import load_params

        where = load_params().paths
        info = pack(args.manifest or Path(where.accepted), args.frames or Path(where.frames), args.out,
                    args.quality, tuple(args.nets), not args.no_wheels)
        print(json.dumps(info, indent=2))
        return info
    if args.cmd == "install":
        return install_lpips(Path(args.pack))
    if args.cmd == "prepare":
        return prepare(args)
    return run(args) if args.cmd == "run" else identity(args)


if __name__ == "__main__":
    main()
