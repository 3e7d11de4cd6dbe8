"""What ``faceswap model-info`` reports: per-stage shapes, parameters, GFLOPs, compression."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from faceswap.model.autoencoder import FaceSwapAutoencoder, ModelConfig


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _named_stages(model: FaceSwapAutoencoder) -> list[tuple[str, nn.Module, list[nn.Module]]]:
    """(name, module whose output is the stage's output, modules holding its parameters), in forward
    order, for one image through the first identity's decoder."""
    enc, dec = model.encoder, model.decoders[model.config.identities[0]]
    stages = [(f"encoder.{i}", m, [m]) for i, m in enumerate(enc.stages)]
    stages += [("bottleneck.0", enc.bottleneck[1], [enc.bottleneck[0]])]
    stages += [("bottleneck.1", enc.bottleneck[3], [enc.bottleneck[2]])]
    stages += [(f"decoder.up{i}", m, [m]) for i, m in enumerate(dec.ups)]
    stages.append(("decoder.to_rgb", dec.to_rgb, [dec.to_rgb]))
    return stages


def describe_model(**config: Any) -> dict[str, Any]:
    """Build the model and trace one image through the encoder and one decoder."""
    cfg = ModelConfig(**config)
    model = FaceSwapAutoencoder(cfg).eval()
    n = cfg.image_size
    x = torch.zeros(1, 3, n, n)
    rows: list[dict[str, Any]] = []
    hooks = []
    for name, module, owners in _named_stages(model):
        params = sum(_count(m) for m in owners)

        def hook(mod, inp, out, name=name, params=params):
            rows.append({"stage": name, "output_shape": list(out.shape[1:]), "params": params})

        hooks.append(module.register_forward_hook(hook))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        z = model.encode(x)
        y = model.decode(z, cfg.identities[0])
    for h in hooks:
        h.remove()
    g = model.geometry
    return {
        "config": cfg.to_dict(),
        "input_shape": [3, n, n],
        "bottleneck_shape": list(z.shape[1:]),
        "output_shape": list(y.shape[1:]),
        "encoder_stages": g.encoder_stages,
        "decoder_stages": g.decoder_stages,
        "params": _count(model),
        "params_encoder": _count(model.encoder),
        "params_per_decoder": _count(model.decoders[cfg.identities[0]]),
        "gflops": counter.get_total_flops() / 1e9,  # forward, one image, encoder + one decoder
        "compression_ratio": model.compression_ratio,
        "stages": rows,
    }


def format_model_info(info: dict[str, Any]) -> str:
    cfg = info["config"]
    c, h, w = info["bottleneck_shape"]
    lines = [
        f"FaceSwapAutoencoder  decoder={cfg['decoder']}  image {cfg['image_size']}×{cfg['image_size']}  "
        f"width {cfg['width']}  identities {', '.join(cfg['identities'])}",
        f"{'stage':<18}{'output (C, H, W)':<22}{'params':>12}",
    ]
    lines.append(f"{'input':<18}{tuple(info['input_shape'])!s:<22}{'':>12}")
    for r in info["stages"]:
        lines.append(f"{r['stage']:<18}{tuple(r['output_shape'])!s:<22}{r['params']:>12,}")
    lines += [
        "",
        f"bottleneck        {c}×{h}×{w}  ({c * h * w:,} values; compression {info['compression_ratio']:.1f}×, "
        f"{100 / info['compression_ratio']:.1f}% of the input)",
        f"encoder stages    {info['encoder_stages']} stride-2 + 2 bottleneck convs; decoder stages "
        f"{info['decoder_stages']}",
        f"parameters        {info['params']:,} (encoder {info['params_encoder']:,}, "
        f"{info['params_per_decoder']:,} per decoder)",
        f"forward GFLOPs    {info['gflops']:.3f} per image (encoder + one decoder)",
    ]
    return "\n".join(lines)
