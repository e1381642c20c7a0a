"""LoRA adapters: the PEFT config from the `lora` section, and the checks a saved adapter
must pass before anything downstream trusts it."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synth_ray.config import LoRASection

ADAPTER_FILE = "adapter_model.safetensors"


class AdapterError(RuntimeError):
    """A saved adapter that is missing, empty or all zero."""


def peft_config(section: LoRASection):
    from peft import LoraConfig, TaskType

    return LoraConfig(
        r=section.r,
        lora_alpha=section.alpha,
        lora_dropout=section.dropout,
        bias=section.bias,
        target_modules=list(section.target_modules),
        task_type=TaskType.CAUSAL_LM,
    )


def check_adapter(path: str | Path, expect_trained: bool = True) -> dict[str, Any]:
    """Fail loudly on an adapter that would silently do nothing.

    Under ZeRO-3 a plain save writes shape-(0,) tensors (STACK.md); a broken gather can
    write zeros. LoRA's B matrices start at zero, so after training at least one must not.
    """
    from safetensors.torch import load_file

    path = Path(path)
    f = path / ADAPTER_FILE
    if not f.exists() or not (path / "adapter_config.json").exists():
        raise AdapterError(f"{path}: no {ADAPTER_FILE} / adapter_config.json")
    tensors = load_file(str(f))
    if not tensors:
        raise AdapterError(f"{path}: adapter holds no tensors")
    empty = [k for k, t in tensors.items() if t.numel() == 0]
    if empty:
        raise AdapterError(f"{path}: {len(empty)} empty tensor(s), e.g. {empty[0]} "
                           "(a ZeRO-3 save without gathering the parameters?)")
    a_nonzero = any(t.abs().sum() > 0 for k, t in tensors.items() if "lora_A" in k)
    b_nonzero = any(t.abs().sum() > 0 for k, t in tensors.items() if "lora_B" in k)
    if not a_nonzero or (expect_trained and not b_nonzero):
        raise AdapterError(f"{path}: LoRA weights are all zero: the adapter would change "
                           "nothing (training did not update it, or the save lost it)")
    return {"tensors": len(tensors), "parameters": int(sum(t.numel() for t in tensors.values()))}


def _replace_folder(path: str | Path, fill: Callable[[Path], Any]) -> Any:
    """Fill a temp folder beside `path`, then rename it into place (replacing an older
    one): a half-saved folder is never found at `path`. Returns what `fill` returns."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        out = fill(tmp)
        os.chmod(tmp, 0o755)
        if path.exists():
            shutil.rmtree(path)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_summary(folder: Path, extra: dict[str, Any] | None) -> None:
    if extra:
        (folder / "training_summary.json").write_text(json.dumps(extra, indent=2) + "\n")


def save_adapter(model: Any, path: str | Path, state_dict: dict | None = None,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Save a PEFT model's adapter (safetensors), checked, atomically (`_replace_folder`)."""
    def fill(tmp: Path) -> dict[str, Any]:
        model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        info = check_adapter(tmp)
        _write_summary(tmp, extra)
        return info

    return _replace_folder(path, fill)


def save_full_model(model: Any, tokenizer: Any, path: str | Path, state_dict: dict,
                    extra: dict[str, Any]) -> None:
    """Save a fully trained model (safetensors) and its tokenizer, atomically."""
    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _write_summary(tmp, extra)

    _replace_folder(path, fill)
