"""Resumable training state (CyC-PDAM, the dense-map peer): module weights, optimiser momentum and RNG state as
safetensors, the step and the generator state as JSON, written atomically into a folder named
by a hash of what determines the stage (config fields + data names), so a rerun with the same
inputs resumes and anything else starts afresh."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["stage_dir", "save_state", "load_state"]


def stage_dir(root: Optional[str | os.PathLike], stage: str, key: dict) -> Optional[Path]:
    if root is None:
        return None
    h = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return Path(root) / f"{stage}-{h}"


def save_state(folder: Optional[Path], modules: dict, optimisers: dict, meta: dict, rng: np.random.Generator) -> None:
    """Write ``{name: module}`` weights, optimiser buffers and ``meta`` (+ RNG state) atomically."""
    if folder is None:
        return
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, m in modules.items():
        for k, v in m.state_dict().items():
            tensors[f"m.{name}.{k}"] = v.detach().cpu().contiguous()
    opt_meta = {}
    for name, opt in optimisers.items():
        sd = opt.state_dict()
        opt_meta[name] = {"param_groups": sd["param_groups"], "keys": {}}
        for pid, st in sd["state"].items():
            for k, v in st.items():
                if torch.is_tensor(v):
                    tensors[f"o.{name}.{pid}.{k}"] = v.detach().cpu().contiguous()
                else:
                    opt_meta[name]["keys"].setdefault(str(pid), {})[k] = v
    tensors["torch_rng"] = torch.get_rng_state()
    meta = {**meta, "optimisers": opt_meta, "np_rng": rng.bit_generator.state}
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    os.close(fd)
    save_file(tensors, tmp)
    os.replace(tmp, folder / "state.safetensors")
    (folder / "state.json.tmp").write_text(json.dumps(meta, default=_plain))
    os.replace(folder / "state.json.tmp", folder / "state.json")


def _plain(o):
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def load_state(folder: Optional[Path], modules: dict, optimisers: dict, rng: np.random.Generator) -> Optional[dict]:
    """Restore what :func:`save_state` wrote; returns its meta, or None when there is nothing."""
    if folder is None or not (folder / "state.json").is_file() or not (folder / "state.safetensors").is_file():
        return None
    import torch
    from safetensors.torch import load_file

    try:
        meta = json.loads((folder / "state.json").read_text())
        tensors = load_file(str(folder / "state.safetensors"))
    except (OSError, ValueError, RuntimeError):
        return None
    for name, m in modules.items():
        pre = f"m.{name}."
        m.load_state_dict({k[len(pre):]: v for k, v in tensors.items() if k.startswith(pre)})
    for name, opt in optimisers.items():
        om = meta["optimisers"][name]
        state: dict = {}
        for k, v in tensors.items():
            if k.startswith(f"o.{name}."):
                pid, key = k[len(f"o.{name}."):].split(".", 1)
                state.setdefault(int(pid), {})[key] = v
        for pid, extra in om["keys"].items():
            state.setdefault(int(pid), {}).update(extra)
        opt.load_state_dict({"state": state, "param_groups": om["param_groups"]})
    torch.set_rng_state(tensors["torch_rng"])
    rng.bit_generator.state = meta["np_rng"]
    return meta
