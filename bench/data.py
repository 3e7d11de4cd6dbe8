"""Benchmark of the data stages: extract + align throughput next to its two ceilings.

    python bench/data.py [--runs 3] [--ratio-runs 0] [--raw DIR (default: params paths.demo)] [--out bench/results]
    python bench/data.py --device cuda --frame-size 1280x720 --no-mtcnn     # on a machine with a CUDA GPU

On the demo clips (generated into a temporary folder when ``--raw`` does not exist), measured in one
process, each figure the median of ``--runs`` runs, frames = sampled frames (params extract.every):

- decode ceiling: decode the sampled frames alone (grab/retrieve, videos in parallel threads, no write);
- detector ceiling: the stage's detector (``--detector``, default params align.detector resolved: RetinaFace
  mobilenet-0.25) alone on those frames already in memory, batched as the stage does (params align.batch_size);
- that detector one frame at a time (batch 1), to show what batching buys; MTCNN batched and one at a
  time alongside, for comparison;
- the roll retry's cost: the detector with :class:`RollRetry` on the same frames as the stage runs it (upright
  looks per batch, turned looks per clip), and per
  faceless frame (a blurred frame: every rotation is tried), probed as the stage does (a run of ``batch_size``
  faceless frames, ``align.roll_retry_every``) and turning every one;
- the stage: stages ``extract`` + ``align`` end to end (JPEG write and read, selection,
  smoothing, warps, PNG crops, manifest and reports), called as functions (no interpreter start-up).

The aim: the stage runs at >= 80% of the slower ceiling. Prints a table and writes ``data.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from faceswap.config import load_params

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--raw", type=Path, default=REPO / load_params(REPO / "params.yaml").paths.demo)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--out", type=Path, default=REPO / "bench/results")
    ap.add_argument("--detector", default=None, help="auto | retinaface | retinaface_r50 | mtcnn (default: params)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="where the detectors run (auto: cuda when present)")
    ap.add_argument("--frame-size", default=None, metavar="WxH",
                    help="synthesise the demo clips at this size (e.g. 1280x720) instead of reading --raw")
    ap.add_argument("--ratio-runs", type=int, default=0, metavar="N",
                    help="then N more rounds of only the detector ceiling, the stage and the stage without the roll "
                         "retry, back to back: the aim's ratio from pairs")
    ap.add_argument("--no-mtcnn", action="store_true", help="skip the MTCNN rows (facenet-pytorch not installed)")
    args = ap.parse_args(argv)

    import cv2
    import pandas as pd
    import torch

    from faceswap.config import with_overrides
    from faceswap.data.align import _usable
    from faceswap.data.demo import make_demo
    from faceswap.data.detect import MtcnnDetector, create_detector
    from faceswap.data.roll_retry import RollRetry
    from faceswap.data.sampling import footage_frames, resolve_every
    from faceswap.data.split import assign_split
    from faceswap.data.video import INDEX_NAME, find_videos, iter_sampled_frames
    from faceswap.stages import align as align_stage
    from faceswap.stages import extract as extract_stage

    p = load_params(args.params)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    tmp = Path(tempfile.mkdtemp(prefix="bench-data-"))
    raw = args.raw
    if args.frame_size or not raw.is_dir():
        d = p.data.demo
        width, height = (int(v) for v in args.frame_size.lower().split("x")) if args.frame_size else (d.width, d.height)
        raw = tmp / "raw"
        make_demo(
            raw,
            identities=p.base.identities,
            clips=d.clips,
            seconds=d.seconds,
            fps=d.fps,
            width=width,
            height=height,
            seed=p.base.seed,
        )
    steps = resolve_every(p.extract, footage_frames(raw, p.base.identities))  # extract.every, per identity
    videos = [(v, steps[i]) for i in p.base.identities for v in find_videos(raw, i)[0]]
    cap = p.extract.max_frames
    workers = p.extract.workers or os.cpu_count() or 1

    def decode_all() -> list:
        def one(video):
            v, every = video
            return [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for _, _, f in iter_sampled_frames(v, every, cap)]

        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(one, videos))

    per_video = decode_all()
    n = sum(len(f) for f in per_video)
    choice = create_detector(args.detector or p.align.detector, device=device,
                             retinaface_weights=p.align.retinaface_weights, min_face_size=p.align.min_face_size)
    det = choice.detector
    mtcnn = None if args.no_mtcnn else MtcnnDetector(device, min_face_size=p.align.min_face_size)
    usable = _usable(p.align, p.align.size or p.base.image_size)
    retry = RollRetry(det, usable=usable, every=p.align.roll_retry_every)
    exhaustive = RollRetry(det, usable=usable, every=1)  # every faceless frame turned: the old cost
    bs = p.align.batch_size

    def detect(batch: int, d=det):
        def run():
            for frames in per_video:
                if isinstance(d, RollRetry):  # as the stage runs it: upright per batch, turned looks per clip
                    out = [x for i in range(0, len(frames), batch) for x in d.look_upright(frames[i : i + batch])]
                    d.recover(out, frames.__getitem__)
                    continue
                for i in range(0, len(frames), batch):
                    d.detect(frames[i : i + batch])

        return run

    blank = cv2.GaussianBlur(per_video[0][0], (0, 0), 25)  # a faceless frame: the retry's worst case
    faceless = [blank] * bs

    def retry_faceless():
        retry.detect(faceless)

    def exhaustive_faceless():
        exhaustive.detect(faceless)

    def stage(align_params=p.align) -> Path:
        out = Path(tempfile.mkdtemp(dir=tmp))
        ps = with_overrides(p, {"paths.raw": str(raw), "paths.frames": str(out / "frames"),
                                "paths.faces": str(out / "faces"), "paths.align_metrics": str(out / "align.json"),
                                "align": align_params.model_dump()}, "bench/data.py")
        extract_stage.run(ps)
        align_stage.run(ps, det)
        return out

    def stage_upright():
        stage(p.align.model_copy(update={"roll_retry": False}))

    # warm-up; the stage skips detection on split-gap frames: count what it detects, to compare like for like
    detect(bs)()
    frames_df = pd.read_parquet(stage() / "frames" / INDEX_NAME)
    n_stage = int((assign_split(frames_df, p.split) != "gap").sum())
    # the measures are interleaved run by run, so that drift in the machine's load hits them alike
    measures = {
        "decode": decode_all,
        "detector_batched": detect(bs),
        "detector_one": detect(1),
        **({"mtcnn_batched": detect(bs, mtcnn), "mtcnn_one": detect(1, mtcnn)} if mtcnn is not None else {}),
        "retry_upright": detect(bs, retry),
        "retry_faceless": retry_faceless,
        "exhaustive_faceless": exhaustive_faceless,
        "stage": stage,
        "stage_upright": stage_upright,
    }
    secs: dict[str, list[float]] = {k: [] for k in measures}
    for _ in range(args.runs):
        for key, fn in measures.items():
            t0 = time.perf_counter()
            fn()
            secs[key].append(time.perf_counter() - t0)
    # the aim's ratio once more, from pairs measured back to back (the host's speed drifts by ±15% over minutes)
    pairs = {"detector_batched": [], "stage": [], "stage_upright": []}
    for _ in range(args.ratio_runs):
        for key in pairs:
            t0 = time.perf_counter()
            measures[key]()
            pairs[key].append(time.perf_counter() - t0)

    def vs_ceiling(stage_s: float, *ceiling_s: float) -> float:
        """The stage's rate (frames it detects) over the slowest of the ceilings' rates (all sampled frames)."""
        return (n_stage / stage_s) / min(n / s for s in ceiling_s)

    paired = [vs_ceiling(st, dt) for st, dt in zip(pairs["stage"], pairs["detector_batched"], strict=True)]
    paired_upright = [vs_ceiling(st, dt) for st, dt in zip(pairs["stage_upright"], pairs["detector_batched"],
                                                            strict=True)]
    med = {k: statistics.median(v) for k, v in secs.items()}
    decode_fps, det_fps, one_fps = n / med["decode"], n / med["detector_batched"], n / med["detector_one"]
    stage_fps, stage_all_fps = n_stage / med["stage"], n / med["stage"]
    upright_stage_fps = n_stage / med["stage_upright"]
    mt_fps, mt_one_fps = (n / med["mtcnn_batched"], n / med["mtcnn_one"]) if mtcnn is not None else (None, None)
    retry_fps, faceless_s = n / med["retry_upright"], med["retry_faceless"] / len(faceless)
    exhaustive_s = med["exhaustive_faceless"] / len(faceless)

    ceiling = min(decode_fps, det_fps)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   + (torch.cuda.get_device_name(0) if device == "cuda" else "CPU only"),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "command": "python bench/data.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "runs": args.runs,
        "videos": len(videos),
        "sampled_frames": n,
        "frames_detected_by_stage": n_stage,
        "frame_size": list(per_video[0][0].shape[:2]) if per_video and per_video[0] else None,
        "batch_size": bs,
        "detector": det.name,
        "detector_weights": det.weights_digest,
        "detector_reason": choice.reason,
        "mtcnn_fps_batched": mt_fps and round(mt_fps, 2),
        "mtcnn_fps_one_at_a_time": mt_one_fps and round(mt_one_fps, 2),
        "detector_fps_with_roll_retry": round(retry_fps, 2),
        "roll_retry_cost_upright": round(det_fps / retry_fps - 1, 3),
        "roll_retry_every": p.align.roll_retry_every,
        "roll_retry_seconds_per_faceless_frame": round(faceless_s, 3),
        "roll_retry_seconds_per_faceless_frame_every_1": round(exhaustive_s, 3),
        "decode_fps": round(decode_fps, 1),
        "detector_fps_batched": round(det_fps, 2),
        "detector_fps_one_at_a_time": round(one_fps, 2),
        "stage_fps": round(stage_fps, 2),
        "stage_fps_all_sampled": round(stage_all_fps, 2),
        "stage_vs_slower_ceiling": round(stage_fps / ceiling, 3),
        "stage_without_roll_retry_fps": round(upright_stage_fps, 2),
        "stage_without_roll_retry_vs_slower_ceiling": round(upright_stage_fps / ceiling, 3),
        "stage_vs_detector_with_roll_retry": round(stage_fps / retry_fps, 3),
        "batched_vs_one_at_a_time": round(det_fps / one_fps, 3),
        # the same ratio within each run (its measures taken minutes apart at most): the spread the machine allows
        "stage_vs_slower_ceiling_each_run": [
            round(vs_ceiling(st, dc, dt), 3)
            for st, dc, dt in zip(secs["stage"], secs["decode"], secs["detector_batched"], strict=True)
        ],
        "ratio_runs": args.ratio_runs,
        "stage_vs_detector_paired": [round(r, 3) for r in paired],
        "stage_vs_detector_paired_median": round(statistics.median(paired), 3) if paired else None,
        "stage_without_roll_retry_vs_detector_paired": [round(r, 3) for r in paired_upright],
        "seconds": secs,
        "seconds_paired": pairs,
    }
    rows = [
        ("decode sampled frames (ceiling)", decode_fps),
        (f"{det.name} batched ×{bs}, frames in memory (ceiling)", det_fps),
        (f"{det.name} one frame at a time", one_fps),
        (f"{det.name} batched ×{bs} with the roll retry", retry_fps),
        (f"MTCNN batched ×{bs}", mt_fps),
        ("MTCNN one frame at a time", mt_one_fps),
        ("extract + align (the stage)", stage_fps),
        ("the stage with align.roll_retry: false", upright_stage_fps),
    ]
    print(f"{n} sampled frames from {len(videos)} videos, median of {args.runs} runs, {result['machine']}")
    print(f"{'measure':52s} {'frames/s':>9s}")
    for name, fps in (r for r in rows if r[1] is not None):
        print(f"{name:52s} {fps:9.2f}")
    print(
        f"stage / slower ceiling: {result['stage_vs_slower_ceiling']:.0%} "
        f"(each run: {', '.join(f'{r:.0%}' for r in result['stage_vs_slower_ceiling_each_run'])}) "
        f"(without the roll retry {result['stage_without_roll_retry_vs_slower_ceiling']:.0%}; "
        f"against the detector with the retry {result['stage_vs_detector_with_roll_retry']:.0%}); "
        f"batched / one-at-a-time: {result['batched_vs_one_at_a_time']:.2f}×; roll retry: "
        f"{faceless_s:.3f} s per faceless frame in a run of {bs} ({exhaustive_s:.3f} s turning every one), "
        f"{result['roll_retry_cost_upright']:+.1%} on the demo frames"
    )
    if paired:
        print(f"paired ({args.ratio_runs} back-to-back rounds): stage / detector median "
              f"{statistics.median(paired):.0%} (each: {', '.join(f'{r:.0%}' for r in paired)}); without the roll "
              f"retry {statistics.median(paired_upright):.0%}")
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "".join(f"_{v}" for v in (device if device != "cpu" else None, args.frame_size) if v)
    (args.out / f"data{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
