"""GGUF → plain safetensors model directory, in a child process of `load_model` (models/loading.py).

Transformers loads a GGUF file by dequantizing every tensor to float32 and flags the model as quantized
(it then refuses `save_pretrained`), so the model is rebuilt plain around the same tensors and saved.
That holds the whole model in float32 at once (SmolLM2: about 1.2 GB peak RSS, against 856 MB for pruning
it); in a child process the memory goes back to the system before pruning starts.

    python -m wanda_engine.models.gguf_convert SOURCE.gguf EMPTY_DIR

writes the model and tokenizer into EMPTY_DIR (the parent moves it into the cache), prints
`peak_rss_mb <float>` on stdout, and on failure one line `error: <type>: <message>` on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path

ERROR_PREFIX = "error: "
PEAK_PREFIX = "peak_rss_mb "


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize `gguf` and save it as a plain safetensors model (and tokenizer) into `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf.stem
    # Built on the meta device and given the loaded tensors themselves (assign=True): a second
    # allocated copy would add the model's size to the peak.
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False, assign=True)
    # Tied lm_head may be reported missing; anything else means a broken conversion.
    missing = [m for m in missing if not (config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"tensors lost in conversion: missing={missing} unexpected={unexpected}")
    plain.tie_weights()
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"{ERROR_PREFIX}usage: python -m wanda_engine.models.gguf_convert SOURCE.gguf EMPTY_DIR", file=sys.stderr)
        return 2
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        convert_gguf(Path(argv[0]), Path(argv[1]))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        lines = str(exc).strip().splitlines()
        kind = type(exc).__qualname__
        if type(exc).__module__ != "builtins":  # e.g. struct.error, not a bare "error"
            kind = f"{type(exc).__module__}.{kind}"
        print(f"{ERROR_PREFIX}{kind}: {lines[0] if lines else '(no message)'}", file=sys.stderr)
        return 1
    from wanda_engine.memory import peak_rss_mb

    print(f"{PEAK_PREFIX}{peak_rss_mb():.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
