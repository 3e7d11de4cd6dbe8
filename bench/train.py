"""Every CPU training lever in one run: precision, layout, compile, threads, optimiser, loader, and the step's parts.

    python bench/train.py [--repeats 5] [--steps 12] [--profiles demo-64 p128-32] [--no-compile]

What is timed is the training's own step, :func:`faceswap.train.train_step`: a batch of each identity (8 faces)
through the shared encoder and its own decoder, L1, backward, global-norm clip, the on-device non-finite check,
AdamW. Every configuration is timed
``--repeats`` times, interleaved (config A, B, C, A, B, C, ...), so a load change on this shared machine hits
all of them alike; the table gives the median and the ratio to the fp32 NCHW baseline of the same round.
The CPU's fp32 and bf16 matmul and convolution ceilings are measured in the same run, so each figure is also
a share of the ceiling of its own dtype (achieved FLOP/s = 3 × forward FLOPs × images/s).

Sections (each a table; all of them in bench/results/train_cpu.json):
* ``ceiling``: 1024³ matmul and a 3×3 64→64 convolution (batch 16, 32²), fp32 and bf16;
* ``levers``: per profile and variant: fp32/bf16 × NCHW/channels-last, eager or ``torch.compile`` (compile time
  reported apart), the for-loop AdamW that training used before against the fused one;
* ``threads``: intra-op × inter-op threads, each in its own process (inter-op is fixed at start-up);
* ``loader``: the real data path (params.yaml's augmentation on the demo's training crops) by workers, and
  the augmentation's cost per step in-process; then loader + step together by workers;
* ``parts``: where a step of the real loop goes: data wait, forward, backward + clip, optimiser, and the
  periodic jobs at params.yaml's intervals (validation, checkpoint, MLflow logging, preview), amortised per step.
Model inputs are synthetic for ``levers`` and ``threads`` (the arithmetic does not depend on pixel values); the
loader and parts sections read the demo's faces (run ``dvc repro validate`` first).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from _common import print_table, write_results
from faceswap.compute import CpuFeatures, plan_compute
from faceswap.config import load_params
from faceswap.model import FaceSwapAutoencoder, ModelConfig
from faceswap.model.info import describe_model

PROFILES = {
    "demo-64": dict(image_size=64, width=16, bottleneck_channels=128),  # params.yaml's CPU demo model
    "p128-32": dict(image_size=128, width=32, bottleneck_channels=256),  # the grid experiment's size (#22)
}
BATCH = 8  # per identity, as params.yaml's train.batch_size
IDENTITIES = ("a", "b")


# --- ceilings ------------------------------------------------------------------------------------------


def _time_op(fn: Callable[[], object], repeats: int, budget_s: float = 20.0) -> float:
    """Median seconds of ``fn`` over ``repeats`` (fewer if one call already eats the budget: emulated bf16)."""
    fn()
    times: list[float] = []
    t_end = time.perf_counter() + budget_s
    while len(times) < repeats and (not times or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ceilings(repeats: int) -> list[dict]:
    rows = []
    n = 1024
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        s = _time_op(lambda a=a, b=b: a @ b, repeats)
        rows.append({"op": f"matmul {n}³", "dtype": name, "layout": "-", "gflop_s": 2 * n**3 / s / 1e9})
        conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(dtype)
        x = torch.randn(16, 64, 32, 32, dtype=dtype)
        flops = 2 * 16 * 64 * 64 * 9 * 32 * 32
        for layout in ("NCHW", "channels-last"):
            cl = layout != "NCHW"
            c = conv.to(memory_format=torch.channels_last) if cl else conv
            xi = x.contiguous(memory_format=torch.channels_last) if cl else x
            with torch.no_grad():
                s = _time_op(lambda c=c, xi=xi: c(xi), repeats)
            rows.append({"op": "conv 3×3 64→64, 16×32²", "dtype": name, "layout": layout, "gflop_s": flops / s / 1e9})
    return rows


def ceiling_of(rows: list[dict], dtype: str) -> float:
    return max(r["gflop_s"] for r in rows if r["dtype"] == dtype)


# --- the training step -----------------------------------------------------------------------------------


class Step:
    """One training step of both identities on synthetic inputs, in one configuration."""

    def __init__(self, profile: str, variant: str, precision: str, channels_last: bool, optimizer: str = "fused",
                 compile_model: bool = False, lpips: bool = False) -> None:
        from faceswap.compute import ComputePlan
        from faceswap.train import StepParts, SwapModel

        torch.manual_seed(0)
        cfg = dict(PROFILES[profile], decoder=variant, identities=IDENTITIES)
        self.model = FaceSwapAutoencoder(ModelConfig(**cfg))
        self.plan = ComputePlan("cpu", precision, channels_last, "bench")
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = torch.compile(SwapModel(self.model)) if compile_model else SwapModel(self.model)
        kw = {"fused": True} if optimizer == "fused" else {"foreach": optimizer == "foreach"}
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3, **kw)
        n = cfg["image_size"]
        self.xs = [torch.rand(BATCH, 3, n, n) for _ in IDENTITIES]
        if channels_last:
            self.xs = [x.contiguous(memory_format=torch.channels_last) for x in self.xs]
        from faceswap.config import LossParams

        loss_cfg = LossParams(lpips_net="vgg", lpips_weight=0.1, lpips_every=5, lpips_images=4) if lpips \
            else LossParams(lpips_net="none", lpips_weight=0.0)
        self.parts = StepParts(net=self.net, model=self.model, opt=self.opt, loss=loss_cfg, grad_clip=1.0,
                               scaler=torch.amp.GradScaler("cpu", enabled=False), autocast=self.plan.autocast)
        self.calls = 0
        t0 = time.perf_counter()
        self()  # warm-up (and the compile, when asked)
        self.first_s = time.perf_counter() - t0
        self()

    def __call__(self) -> None:
        """One step of the training's own code (the inputs are their own targets)."""
        from faceswap.train import train_step

        train_step(self.parts, self.xs, self.xs, self.calls, 1e-3)
        self.calls += 1


def time_steps(step: Step, steps: int, budget_s: float = 30.0) -> float:
    """Seconds per step over ``steps`` steps (fewer when a step is slow: emulated bf16)."""
    t0 = time.perf_counter()
    done = 0
    while done < steps and (done == 0 or time.perf_counter() - t0 < budget_s):
        step()
        done += 1
    return (time.perf_counter() - t0) / done


def interleaved(configs: dict[str, Callable[[], Step]], steps: int, repeats: int) -> dict[str, dict]:
    """Build each config once, then time them round-robin ``repeats`` times; per config the median s/step."""
    built = {}
    for name, make in configs.items():
        built[name] = make()
        print(f"    built {name} (first step {built[name].first_s:.1f} s)", flush=True)
    times: dict[str, list[float]] = {n: [] for n in built}
    for _ in range(repeats):
        for name, step in built.items():
            times[name].append(time_steps(step, steps))
    return {n: {"s_per_step": statistics.median(t), "spread": (max(t) - min(t)) / statistics.median(t),
                "first_step_s": built[n].first_s} for n, t in times.items()}


LEVERS = {  # name → (precision, channels_last, optimizer, compile, lpips)
    "fp32 NCHW, for-loop AdamW (before)": ("fp32", False, "for-loop", False, False),
    "fp32 NCHW": ("fp32", False, "fused", False, False),
    "fp32 channels-last": ("fp32", True, "fused", False, False),
    "bf16 NCHW": ("bf16", False, "fused", False, False),
    "bf16 channels-last": ("bf16", True, "fused", False, False),
    "auto + compile": ("auto", None, "fused", True, False),
    "auto + LPIPS-vgg (every 5th step, 4 faces)": ("auto", None, "fused", False, True),
}


def levers(profiles: list[str], variants: list[str], steps: int, repeats: int, ceil: list[dict],
           with_compile: bool) -> list[dict]:
    auto = plan_compute("cpu")
    rows = []
    for profile in profiles:
        for variant in variants:
            gflops = describe_model(**PROFILES[profile], decoder=variant)["gflops"]
            print(f"  {profile} {variant}", flush=True)
            configs = {}
            for name, (prec, cl, opt, comp, lp) in LEVERS.items():
                if comp and not with_compile:
                    continue
                if lp and profile != "demo-64":
                    continue
                prec = auto.precision if prec == "auto" else prec
                cl = auto.channels_last if cl is None else cl
                configs[name] = (lambda p=prec, c=cl, o=opt, k=comp, lp=lp, v=variant, pr=profile:
                                 Step(pr, v, p, c, o, k, lp))
            res = interleaved(configs, steps if profile == "demo-64" else max(3, steps // 3), repeats)
            base = res["fp32 NCHW, for-loop AdamW (before)"]["s_per_step"]
            for name, r in res.items():
                prec = LEVERS[name][0] if LEVERS[name][0] != "auto" else auto.precision
                ips = 2 * BATCH / r["s_per_step"]
                achieved = 3 * gflops * ips
                rows.append({"profile": profile, "variant": variant, "config": name, "images_per_s": ips,
                             "x_before": base / r["s_per_step"], "gflop_s": achieved,
                             "of_ceiling": achieved / ceiling_of(ceil, prec), "spread": r["spread"],
                             "first_step_s": r["first_step_s"]})
    return rows


# --- threads (each setting in its own process) --------------------------------------------------------------


def child_threads(spec: str) -> None:
    """``--child-threads intra,interop,steps,repeats``: time the auto-plan demo step, print JSON."""
    intra, inter, steps, repeats = (int(v) for v in spec.split(","))
    torch.set_num_interop_threads(inter)
    torch.set_num_threads(intra)
    auto = plan_compute("cpu")
    out = {}
    for variant in ("convtranspose", "resize_nearest"):
        s = Step("demo-64", variant, auto.precision, auto.channels_last)
        out[variant] = statistics.median(time_steps(s, steps) for _ in range(repeats))
    print(json.dumps(out))


def threads(steps: int, repeats: int) -> list[dict]:
    cores = os.cpu_count() or 1
    settings = sorted({(1, 1), (cores, 1), (cores, cores), (max(1, cores // 2), 1),
                       (torch.get_num_threads(), torch.get_num_interop_threads())})
    res: dict[tuple[int, int], list[dict]] = {s: [] for s in settings}
    for _ in range(max(1, repeats // 2)):  # interleaved rounds of one process per setting
        for intra, inter in settings:
            out = subprocess.run([sys.executable, __file__, "--child-threads", f"{intra},{inter},{steps},3"],
                                 capture_output=True, text=True, check=True)
            res[(intra, inter)].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    base = (torch.get_num_threads(), torch.get_num_interop_threads())  # torch's defaults on this machine
    for (intra, inter), runs in res.items():
        for variant in ("convtranspose", "resize_nearest"):
            s = statistics.median(r[variant] for r in runs)
            b = statistics.median(r[variant] for r in res[base])
            rows.append({"variant": variant, "intra_op": intra, "inter_op": inter, "images_per_s": 2 * BATCH / s,
                         "x_default": b / s})
    return rows


# --- loader ---------------------------------------------------------------------------------------------


def _faces(manifest: str, faces_dir: str):
    from faceswap.data.dataset import load_faces

    p = load_params()
    return p, load_faces(manifest, tuple(p.base.identities), "train", p.base.image_size, faces_dir)


def _loader(p, faces, steps: int, workers: int, pin: bool = False):
    from faceswap.data.dataset import StepBatches, SwapPairs, worker_init

    return torch.utils.data.DataLoader(
        SwapPairs(faces, p.train.augment, 0), batch_sampler=StepBatches(0, steps, p.train.batch_size),
        num_workers=workers, prefetch_factor=4 if workers else None, pin_memory=pin, worker_init_fn=worker_init)


def loader(manifest: str, faces_dir: str, steps: int, repeats: int) -> list[dict]:
    from faceswap.data.dataset import SwapPairs, to_float

    p, faces = _faces(manifest, faces_dir)
    images = p.train.batch_size * len(faces)
    rows = []
    import cv2

    cv2.setNumThreads(1)  # as in a loader worker; and a pool started here would deadlock the workers forked later
    ds = SwapPairs(faces, p.train.augment, 0)
    per = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for k in range(64):
            ds[k]
        per.append((time.perf_counter() - t0) / 64)
    aug_step = statistics.median(per) * p.train.batch_size
    rows.append({"what": "augmentation in-process (1 thread)", "workers": 0, "images_per_s": images / aug_step,
                 "ms_per_step": 1e3 * aug_step})
    cores = os.cpu_count() or 1
    for workers in sorted({0, 1, cores}):
        for pin in (False, True) if workers == 1 else (False,):
            ts = []
            for _ in range(repeats):
                it = iter(_loader(p, faces, steps + 4, workers, pin))
                for _ in range(4):
                    next(it)
                t0 = time.perf_counter()
                for _ in range(steps):
                    next(it)
                ts.append((time.perf_counter() - t0) / steps)
            s = statistics.median(ts)
            rows.append({"what": "data path only" + (", pinned" if pin else ""), "workers": workers,
                         "images_per_s": images / s, "ms_per_step": 1e3 * s})
    auto = plan_compute("cpu")
    for workers in sorted({0, 1, cores}):
        s_all = []
        for _ in range(repeats):
            step = Step("demo-64", "convtranspose", auto.precision, auto.channels_last)
            it = iter(_loader(p, faces, steps + 4, workers))
            for _ in range(4):
                next(it)
            t0 = time.perf_counter()
            for _ in range(steps):
                batch = next(it)
                step.xs = [to_float(batch[f"{i}_in"], torch.device("cpu"), auto.channels_last) for i in faces]
                step()
            s_all.append((time.perf_counter() - t0) / steps)
        s = statistics.median(s_all)
        rows.append({"what": "loader + step (demo, convtranspose, auto)", "workers": workers,
                     "images_per_s": images / s, "ms_per_step": 1e3 * s})
    return rows


# --- the step's parts in the real loop --------------------------------------------------------------------


def parts(manifest: str, faces_dir: str, steps: int, repeats: int) -> list[dict]:
    """Wall time of the loop's pieces per step, the periodic jobs amortised at params.yaml's intervals."""
    from faceswap.data.dataset import stack_faces, to_float
    from faceswap.losses import reconstruction_loss
    from faceswap.train import default_workers

    p, faces = _faces(manifest, faces_dir)
    t = p.train
    auto = plan_compute("cpu")
    rows = []
    from faceswap.data.dataset import load_faces

    val = {i: stack_faces(fs, t.val_images) for i, fs in
           load_faces(manifest, tuple(p.base.identities), "val", p.base.image_size, faces_dir).items()}
    for variant in ("convtranspose", "resize_nearest"):
        step = Step("demo-64", variant, auto.precision, auto.channels_last)
        acc = {k: [] for k in ("data wait", "forward + loss", "backward + clip", "optimiser")}
        workers = t.workers if t.workers is not None else default_workers(torch.device("cpu"))
        it = iter(_loader(p, faces, steps * repeats + 4, workers))
        for _ in range(4):
            next(it)
        for _ in range(steps * repeats):
            t0 = time.perf_counter()
            batch = next(it)
            xs = [to_float(batch[f"{i}_in"], torch.device("cpu"), auto.channels_last) for i in faces]
            ys = [to_float(batch[f"{i}_target"], torch.device("cpu"), auto.channels_last) for i in faces]
            t1 = time.perf_counter()
            with auto.autocast():
                preds = step.net(*xs)
                loss = sum(reconstruction_loss(pr, y, t.loss, False)[0] for pr, y in zip(preds, ys, strict=True))
            float(loss.detach())
            t2 = time.perf_counter()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(step.model.parameters(), 1.0)
            t3 = time.perf_counter()
            step.opt.step()
            step.opt.zero_grad(set_to_none=True)
            t4 = time.perf_counter()
            for k, a, b in (("data wait", t0, t1), ("forward + loss", t1, t2), ("backward + clip", t2, t3),
                            ("optimiser", t3, t4)):
                acc[k].append(b - a)
        per_step = {k: statistics.median(v) for k, v in acc.items()}

        per_step.update(_periodic_costs(step, val, t, auto, repeats))
        total = sum(per_step.values())
        for k, v in per_step.items():
            rows.append({"variant": variant, "part": k, "ms_per_step": 1e3 * v, "share": v / total})
        rows.append({"variant": variant, "part": "total", "ms_per_step": 1e3 * total, "share": 1.0,
                     "images_per_s": 2 * t.batch_size / total})
    return rows


def _periodic_costs(step: Step, val: dict, t, auto, repeats: int) -> dict[str, float]:
    """Seconds per training step of each periodic job at params.yaml's interval (its cost / its interval)."""
    from faceswap.checkpoint import save_checkpoint
    from faceswap.train import training_preview, validation_loss

    cpu = torch.device("cpu")

    def job(fn: Callable[[], object]) -> float:
        return statistics.median(_timed(fn) for _ in range(repeats))

    with tempfile.TemporaryDirectory() as tmp:
        state = {"model": step.model.state_dict(), "optimizer": step.opt.state_dict()}
        return {
            f"validation (every {t.val_every})": job(lambda: [validation_loss(
                step.model, v, t, cpu, auto.autocast, auto.channels_last) for v in (val, val)]) / t.val_every,
            f"checkpoint (every {t.checkpoint_every})": job(
                lambda: save_checkpoint(Path(tmp) / "c.pt", state)) / t.checkpoint_every,
            f"preview (every {t.preview_every})": job(
                lambda: training_preview(step.model, {i: v[:4] for i, v in val.items()}, cpu)) / t.preview_every,
            f"MLflow metrics (every {t.log_every})": _mlflow_cost(Path(tmp), repeats) / t.log_every,
        }


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _mlflow_cost(tmp: Path, repeats: int) -> float:
    """One ``log_metrics`` call of the loop (4 metrics) into a sqlite store, as the pipeline's runs write."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    with open(os.devnull, "w") as null, contextlib.redirect_stderr(null):  # alembic's migration chatter
        exp = mlflow.create_experiment("bench", artifact_location=str(tmp / "mlruns"))
    with mlflow.start_run(experiment_id=exp):
        mlflow.log_metrics({"warm": 0.0}, step=0)
        ts = [_timed(lambda i=i: mlflow.log_metrics({"train_loss": 0.1, "lr": 1e-3, "images_per_s": 300.0,
                                                       "train_pixel": 0.1}, step=i)) for i in range(1, 4 * repeats)]
    return statistics.median(ts)


# --- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds; the table gives medians")
    ap.add_argument("--steps", type=int, default=12, help="timed steps per round (a third at 128²)")
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    ap.add_argument("--variants", nargs="+", default=["convtranspose", "resize_nearest"])
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (a minute each)")
    where = load_params().paths  # the pipeline's own outputs, where params.yaml puts them
    ap.add_argument("--data", default=where.accepted, help="face manifest (train and val splits)")
    ap.add_argument("--faces-dir", default=where.faces)
    ap.add_argument("--sections", nargs="+", default=["ceiling", "levers", "threads", "loader", "parts"])
    ap.add_argument("--out", type=Path, default=None, help="folder of train_cpu.json (default bench/results)")
    ap.add_argument("--child-threads", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_threads:
        child_threads(args.child_threads)
        return
    feats = CpuFeatures.detect()
    auto = plan_compute("cpu")
    print(f"CPU: {feats.describe()}; auto plan: {auto.describe()}; threads {torch.get_num_threads()}", flush=True)
    load_before = os.getloadavg()[0]
    out: dict[str, list[dict]] = {}
    ceil = ceilings(args.repeats)
    out["ceiling"] = ceil
    print_table(ceil, [("op", "op", ""), ("dtype", "dtype", ""), ("layout", "layout", ""),
                       ("gflop_s", "GFLOP/s", ".1f")])
    if "levers" in args.sections:
        out["levers"] = levers(args.profiles, args.variants, args.steps, args.repeats, ceil, not args.no_compile)
        print_table(out["levers"], [("profile", "profile", ""), ("variant", "variant", ""), ("config", "config", ""),
                                    ("images_per_s", "images/s", ".0f"), ("x_before", "× before", ".2f"),
                                    ("gflop_s", "GFLOP/s", ".1f"), ("of_ceiling", "of ceiling", ".0%"),
                                    ("spread", "spread", ".0%"), ("first_step_s", "first step s", ".1f")])
    if "threads" in args.sections:
        out["threads"] = threads(args.steps, args.repeats)
        print_table(out["threads"], [("variant", "variant", ""), ("intra_op", "intra-op", "d"),
                                     ("inter_op", "inter-op", "d"), ("images_per_s", "images/s", ".0f"),
                                     ("x_default", "× default", ".2f")])
    if "loader" in args.sections:
        out["loader"] = loader(args.data, args.faces_dir, args.steps * 2, args.repeats)
        print_table(out["loader"], [("what", "what", ""), ("workers", "workers", "d"),
                                    ("images_per_s", "images/s", ".0f"), ("ms_per_step", "ms / step", ".1f")])
    if "parts" in args.sections:
        out["parts"] = parts(args.data, args.faces_dir, args.steps * 2, args.repeats)
        print_table(out["parts"], [("variant", "variant", ""), ("part", "part", ""),
                                   ("ms_per_step", "ms / step", ".2f"), ("share", "share", ".0%")])
    rows = [dict(r, section=k) for k, v in out.items() for r in v]
    path = write_results("train_cpu", rows, {
        "cpu": feats.describe(), "auto_plan": auto.describe(), "repeats": args.repeats,
        "steps": args.steps, "loadavg_1min_before_after": [load_before, os.getloadavg()[0]]}, args.out)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
