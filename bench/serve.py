"""CPU benchmark of serving: latency of one aligned face and one full frame, in-process vs REST, and video
conversion frames/s, with the bare model forward as the floor, all measured in one run.

    python bench/serve.py [--profile demo-256] [--repeats 30] [--frame-repeats 12] [--video-seconds 3]

- **forward**: ``model(x, identity)`` on one (1, 3, S, S) tensor, no pre/post-processing: the floor.
- **in-process**: ``mlflow.pyfunc.load_model(...).predict(df)`` with a one-row request (base64 PNG in,
  base64 PNG out; the full frame also runs MTCNN, alignment, paste-back and colour transfer).
- **REST**: the same request as JSON to ``mlflow models serve`` (started by :class:`faceswap.serving.server.Server`
  on a free loopback port, one uvicorn worker), over a keep-alive connection; includes JSON (de)serialisation.
- **video**: ``faceswap swap`` on a synthesised clip of the astronaut (640×480, 25 fps): whole-run frames/s,
  detection pass and swap pass separately.

The model is untrained (timing does not depend on the weights) with the chosen profile's shape; it is packaged
as a pyfunc exactly as ``register`` logs it. Prints a table and writes bench/results/serve_cpu.json (other profiles:
serve_cpu_<profile>.json).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import print_table, write_results

PROFILES = {
    "demo-64": dict(image_size=64, width=16, bottleneck_channels=128),  # params.yaml's CPU demo model
    "demo-256": dict(image_size=256, width=16, bottleneck_channels=128),  # the 256² face, demo widths
    "seed-256": dict(image_size=256, width=128, bottleneck_channels=1024),  # the seed's model
}


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


def timed(fn, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def inputs(size: int, coverage: float) -> tuple[np.ndarray, np.ndarray]:
    """An aligned size² crop of the astronaut and a 1280×720 frame with her in it."""
    import cv2

    from faceswap.data.demo import astronaut
    from faceswap.data.geometry import face_template, umeyama, warp_face

    still = astronaut()
    crop = warp_face(still.image, umeyama(still.landmarks, face_template(size, coverage)), size)
    frame = cv2.resize(cv2.GaussianBlur(still.image, (0, 0), 15), (1280, 720))
    face = cv2.resize(still.image, (720, 720), interpolation=cv2.INTER_CUBIC)
    frame[:, 280:1000] = face
    return crop, frame


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="demo-256", choices=list(PROFILES))
    ap.add_argument("--variant", default="resize_nearest")
    ap.add_argument("--repeats", type=int, default=30, help="aligned-face requests per path")
    ap.add_argument("--frame-repeats", type=int, default=12, help="1280×720 frame requests per path")
    ap.add_argument("--video-seconds", type=float, default=3.0)
    args = ap.parse_args()
    for k, v in {"DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true", "NO_ALBUMENTATIONS_UPDATE": "1"}.items():
        os.environ.setdefault(k, v)

    import mlflow
    import pandas as pd
    import requests

    from faceswap.checkpoint import save_checkpoint
    from faceswap.config import Params
    from faceswap.data.demo import astronaut, make_clip
    from faceswap.model import FaceSwapAutoencoder, ModelConfig
    from faceswap.serving.pyfunc import encode_png
    from faceswap.serving.server import Server, free_port, package_checkpoint
    from faceswap.serving.swapper import Swapper
    from faceswap.swap import swap_video

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    cfg = ModelConfig(**PROFILES[args.profile], decoder=args.variant)
    model = FaceSwapAutoencoder(cfg).eval()
    ckpt = save_checkpoint(work / "model.pt", {"model": model.state_dict(), "model_config": cfg.to_dict(),
                                               "variant": args.variant, "step": 0})
    pkg = package_checkpoint(ckpt, work / "pyfunc")
    params = Params()
    size = cfg.image_size
    crop, frame = inputs(size, params.align.coverage)

    def request(image: np.ndarray, aligned: bool) -> pd.DataFrame:
        return pd.DataFrame({"image": [encode_png(image)], "direction": ["a2b"], "aligned": [aligned]})

    req_crop, req_frame = request(crop, True), request(frame, False)
    rows: list[dict] = []

    def add(case: str, path: str, times: list[float]) -> None:
        rows.append({"case": case, "path": path, "median_ms": pct(times, 50), "p95_ms": pct(times, 95),
                     "n": len(times)})
        print(f"  {case:<22} {path:<12} median {pct(times, 50):8.1f} ms   p95 {pct(times, 95):8.1f} ms", flush=True)

    # floor: the bare forward
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        add(f"aligned {size}²", "forward", timed(lambda: model(x, "b"), args.repeats))

    # in-process pyfunc
    loaded = mlflow.pyfunc.load_model(str(pkg))
    add(f"aligned {size}²", "in-process", timed(lambda: loaded.predict(req_crop), args.repeats))
    add("frame 1280×720", "in-process", timed(lambda: loaded.predict(req_frame), args.frame_repeats, warmup=1))
    assert loaded.predict(req_frame).loc[0, "face_found"] is True

    # REST
    server = Server(params, model=str(pkg), port=free_port(), work_dir=work)
    log = work / "serve.log"
    with open(log, "wb") as out:
        server.start(stdout=out, stderr=out)
    try:
        ready = server.wait_ready(180, log)
        print(f"  server ready in {ready:.1f} s", flush=True)
        session = requests.Session()

        def post(body: str) -> None:
            r = session.post(server.url + "/invocations", data=body, headers={"Content-Type": "application/json"},
                             timeout=120)
            r.raise_for_status()
            pred = r.json()["predictions"][0]
            assert pred["error"] is None, pred["error"]
            base64.b64decode(pred["image"])

        body_crop = json.dumps({"dataframe_split": req_crop.to_dict(orient="split", index=False)})
        body_frame = json.dumps({"dataframe_split": req_frame.to_dict(orient="split", index=False)})
        add(f"aligned {size}²", "REST", timed(lambda: post(body_crop), args.repeats))
        add("frame 1280×720", "REST", timed(lambda: post(body_frame), args.frame_repeats, warmup=1))
    finally:
        server.stop()

    # video
    clip = make_clip(astronaut(), work / "clip.mp4", seconds=args.video_seconds, fps=25, width=640, height=480,
                     seed=0)
    swapper = Swapper.from_checkpoint(ckpt, params.serve, params.align)
    res = swap_video(swapper, clip, work / "out.mp4", "a2b", progress=False)
    video = {"frames": res.frames, "faces": res.faces, "width": res.width, "height": res.height,
             "seconds": res.seconds, "frames_per_second": res.frames_per_second,
             "detect_frames_per_second": round(res.frames / res.detect_seconds, 2),
             "swap_frames_per_second": round(res.frames / res.swap_seconds, 2)}

    by = {(r["case"], r["path"]): r for r in rows}
    a = f"aligned {size}²"
    fwd, inproc, rest = by[(a, "forward")], by[(a, "in-process")], by[(a, "REST")]
    overhead = rest["median_ms"] - inproc["median_ms"]
    summary = {
        "profile": args.profile, "model": {**PROFILES[args.profile], "variant": args.variant},
        "rest_overhead_ms_aligned": round(overhead, 2),
        "rest_overhead_vs_forward": round(overhead / fwd["median_ms"], 3),
        "rest_overhead_vs_in_process": round(overhead / inproc["median_ms"], 3),
        "rest_overhead_ms_frame": round(by[("frame 1280×720", "REST")]["median_ms"]
                                        - by[("frame 1280×720", "in-process")]["median_ms"], 2),
        "video": video,
    }
    print()
    print_table(rows, [("case", "case", ""), ("path", "path", ""), ("median_ms", "median ms", ".1f"),
                       ("p95_ms", "p95 ms", ".1f"), ("n", "n", "d")])
    print(f"\nREST overhead, aligned: {overhead:.1f} ms = {summary['rest_overhead_vs_forward']:.0%} of the bare "
          "forward, "
          f"{summary['rest_overhead_vs_in_process']:.0%} of the in-process call; frame: "
          f"{summary['rest_overhead_ms_frame']:.1f} ms")
    print(f"video 640×480, {res.frames} frames ({res.faces} with a face): {res.frames_per_second:.1f} frames/s "
          f"(detect {video['detect_frames_per_second']:.1f}, swap+blend+write {video['swap_frames_per_second']:.1f})")
    path = write_results("serve_cpu" if args.profile == "demo-256" else f"serve_cpu_{args.profile}", rows, summary)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
