"""The faceswap command line with every ``torch.distributed`` collective checked (run under torchrun by the DDP
test): the tensor must be on the backend's device — NCCL reduces CUDA tensors only, gloo CPU ones — so a gloo run
on CPU catches a collective that an NCCL run would refuse. Each rank writes how many collectives it checked to
``$FACESWAP_COLLECTIVES_DIR/rank<r>.txt``, so the test also knows the checks ran."""

from __future__ import annotations

import atexit
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

BACKEND_DEVICE = {"gloo": "cpu", "nccl": "cuda"}
COLLECTIVES = ("all_reduce", "broadcast", "reduce", "all_gather_into_tensor", "reduce_scatter_tensor")
calls = {"n": 0}


def check(tensor: torch.Tensor, backend: str, name: str = "collective") -> None:
    """Raise unless ``tensor`` lies on ``backend``'s device."""
    want = BACKEND_DEVICE.get(str(backend))
    if want is not None and tensor.device.type != want:
        raise RuntimeError(f"{name} on a {tensor.device} tensor under {backend}: it reduces {want} tensors only")


def checked(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        check(tensor, dist.get_backend(), fn.__name__)
        calls["n"] += 1
        return fn(tensor, *args, **kwargs)

    return wrapper


def install() -> None:
    for name in COLLECTIVES:
        setattr(dist, name, checked(getattr(dist, name)))
    folder = os.environ.get("FACESWAP_COLLECTIVES_DIR")
    if folder:
        rank = os.environ.get("RANK", "0")
        atexit.register(lambda: (Path(folder) / f"rank{rank}.txt").write_text(str(calls["n"])))


if __name__ == "__main__":
    install()
    from faceswap.cli import main

    sys.argv = ["faceswap", *sys.argv[1:]]
    sys.exit(main())
