"""The ``torch`` bench engine: the traced benchmark model in PyTorch eager, fp32."""

from __future__ import annotations

from typing import Any

from slmc.bench.decode_bytes import torch_decode_bytes
from slmc.bench.prepare import Preparation
from slmc.bench.thread_policy import ThreadPolicy
from slmc.bench.timing import StepTimer
from slmc.graph.kv_cache import KVCacheSpec


def prepare(prep: Preparation) -> dict[str, Any]:
    read = torch_decode_bytes(prep.spec.module)
    return {**prep.common(), "max_context": prep.max_context, "weight_bytes": read.weight_bytes,
            "decode_bytes": read.to_json()}


def open_timer(info: dict[str, Any], policy: ThreadPolicy) -> StepTimer:
    import torch

    from slmc.bench.models import bench_model

    if policy.threads is not None:
        torch.set_num_threads(policy.threads)
    module = bench_model(info["model"], info["max_context"]).module.eval()

    def logits(ids: Any, keys: Any, values: Any) -> Any:
        with torch.no_grad():
            return module(torch.from_numpy(ids), torch.from_numpy(keys), torch.from_numpy(values))[0].numpy()

    return StepTimer(logits, KVCacheSpec(**info["kv"]), {"intra_op_threads": torch.get_num_threads(),
                                                          "set_by": "policy" if policy.threads else "torch default"})
