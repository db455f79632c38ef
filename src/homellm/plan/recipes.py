"""The commands that realize a fit: Ollama settings and llama-server flags."""

from __future__ import annotations

from homellm.i18n import _
from homellm.plan.fit import FitResult, rope_scale


def ollama_commands(r: FitResult) -> list[str]:
    p = r.params
    lines = []
    spec = r.model.spec
    if spec is not None:
        if r.model.quant == spec.default_quant:
            lines.append(f"ollama pull {spec.id}")
        else:
            lines.append(
                f"ollama pull {spec.id}   # default tag is {spec.default_quant}; for {r.model.quant} pick the "
                f"'-{r.model.quant.lower()}' variant at ollama.com/library/{spec.family}/tags"
            )
    env = [f"OLLAMA_CONTEXT_LENGTH={p.ctx}"]
    if p.flash_attn:
        env.append("OLLAMA_FLASH_ATTENTION=1")
    if p.kv_type != "f16":
        env.append(f"OLLAMA_KV_CACHE_TYPE={p.kv_type}")
    if p.parallel > 1:
        env.append(f"OLLAMA_NUM_PARALLEL={p.parallel}")
    lines.append(" ".join(env) + " ollama serve")
    if not r.fully_offloaded and r.hardware.gpus:
        lines.append(f'# partial offload: add "options": {{"num_gpu": {r.gpu_layers}}} to API requests')
    if p.yarn_orig_ctx:
        lines.append(_("# beyond {n:,} tokens Ollama uses the model's own RoPE settings; llama-server below stretches "
                       "them with YaRN").format(n=p.yarn_orig_ctx))  # fmt: skip
    return lines


def llama_server_command(r: FitResult) -> str:
    p = r.params
    model = str(r.model.path) if r.model.path else f"{r.model.label.replace(':', '-')}-{r.model.quant}.gguf"
    parts = ["llama-server", "-m", model, "-c", str(p.ctx), "-ngl", str(r.gpu_layers)]
    parts += ["-fa", "on" if p.flash_attn else "off"]
    if p.yarn_orig_ctx:
        parts += ["--rope-scaling", "yarn", "--rope-scale", f"{rope_scale(r.model, p):g}"]
        parts += ["--yarn-orig-ctx", str(p.yarn_orig_ctx)]
    if p.kv_type != "f16":
        parts += ["-ctk", p.kv_type, "-ctv", p.kv_type]
    if p.parallel > 1:
        parts += ["-np", str(p.parallel)]
    gpus = [d for d in r.devices if d.kind == "gpu" and d.layers]
    if len(gpus) > 1:
        parts += ["-ts", ",".join(str(len(d.layers)) for d in gpus)]
    parts += ["--host", "127.0.0.1", "--port", "8080"]
    return " ".join(parts)
