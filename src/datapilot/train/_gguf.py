"""A LoRA adapter trained with ``peft`` written as a GGUF adapter that llama.cpp applies at load.

llama.cpp reads an adapter file with ``general.type = adapter``, ``adapter.type = lora``,
``adapter.lora.alpha`` and, for each adapted weight ``blk.N.attn_q.weight``, two tensors
``blk.N.attn_q.weight.lora_a`` (rank x in) and ``...lora_b`` (out x rank). Tensor names follow the
base GGUF's own (the ``gguf`` package maps Hugging Face module names to them). Where llama.cpp's
converter reorders the query and key rows of LLaMA-family models for its rotary layout, the adapter's
``B`` matrices are reordered the same way, so that ``W + B A`` matches the base file's ``W``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datapilot.core.errors import ConfigError, InvalidRequestError, MissingDependencyError

# Architectures whose GGUF stores q/k rows permuted for rotary embeddings (llama.cpp's converter).
_PERMUTED_QK = {"llama"}


def gguf_facts(path: Path) -> dict[str, Any]:
    """The architecture, block count, head counts and tensor names of a GGUF model file."""
    try:
        import gguf
    except ImportError:
        raise MissingDependencyError("gguf", "train") from None
    reader = gguf.GGUFReader(str(path))

    def value(key: str) -> Any:
        f = reader.fields.get(key)
        if f is None or not f.data:
            return None
        part = f.parts[f.data[0]]
        if f.types and f.types[0] == gguf.GGUFValueType.STRING:
            return bytes(part).decode("utf-8")
        return part.tolist()[0]

    arch = value("general.architecture")
    if not arch:
        raise ConfigError(f"{path} has no general.architecture: is it a GGUF model?")
    return {
        "arch": arch,
        "blocks": int(value(f"{arch}.block_count") or 0),
        "heads": int(value(f"{arch}.attention.head_count") or 0),
        "kv_heads": int(value(f"{arch}.attention.head_count_kv") or value(f"{arch}.attention.head_count") or 0),
        "tensors": {t.name for t in reader.tensors},
    }


def _permute(w: Any, heads: int) -> Any:
    """llama.cpp's reordering of q/k rows: the halves of each head's rotary pairs interleaved."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def lora_tensors(state: Mapping[str, Any], facts: Mapping[str, Any]) -> dict[str, Any]:
    """GGUF adapter tensors (float32 numpy arrays) from a peft LoRA state dict."""
    import gguf

    arch_id = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == facts["arch"]), None)
    if arch_id is None:
        raise ConfigError(f"the gguf package does not know the architecture {facts['arch']!r}")
    names = gguf.get_tensor_name_map(arch_id, facts["blocks"])
    out: dict[str, Any] = {}
    for key, tensor in state.items():
        if ".lora_A." not in key and ".lora_B." not in key:
            continue
        module = key.split(".lora_")[0]
        for prefix in ("base_model.model.", "base_model."):
            module = module.removeprefix(prefix)
        target = names.get_name(module)
        if target is None:
            raise ConfigError(f"no GGUF tensor for the adapted module {module!r}: adapt other modules (lora_target)")
        weight = f"{target}.weight"
        if weight not in facts["tensors"]:
            raise ConfigError(f"the base GGUF has no tensor {weight} for the adapted module {module!r}")
        arr = tensor.detach().float().cpu().numpy()
        if ".lora_B." in key and facts["arch"] in _PERMUTED_QK:
            if module.endswith("q_proj"):
                arr = _permute(arr, facts["heads"])
            elif module.endswith("k_proj"):
                arr = _permute(arr, facts["kv_heads"])
        out[f"{weight}.lora_{'a' if '.lora_A.' in key else 'b'}"] = arr
    if not out:
        raise InvalidRequestError("the adapter has no LoRA weights to export")
    return out


def write_lora_gguf(state: Mapping[str, Any], base_gguf: Path, out: Path, alpha: float) -> Path:
    """Write ``state`` (a peft LoRA state dict) as a GGUF adapter for ``base_gguf``; returns ``out``."""
    import gguf

    facts = gguf_facts(base_gguf)
    tensors = lora_tensors(state, facts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    writer = gguf.GGUFWriter(str(tmp), facts["arch"])
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(alpha))
    for name, arr in sorted(tensors.items()):
        writer.add_tensor(name, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(out)
    return out
