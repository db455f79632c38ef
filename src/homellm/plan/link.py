"""What a link to another machine costs per token when llama.cpp splits a model over RPC.

Measured on llama.cpp's own traffic (the RPC filter of :mod:`homellm.split.rpc_wire` counts it): for each
decoded token the main machine sends the remote device its graph inputs without waiting (the residual
stream where the split falls, ``ffn_inp`` and ``ffn_out``, ``n_embd`` floats each; the position; the KV cache
slots; the attention mask over the filled cells; the output row ids) and then asks for the result, which is
the one round trip. llama.cpp offloads the *last* layers, the output layer included, so the result is the
logits (``n_vocab`` floats) when the remote device holds the output layer, else the activations.

Time per token over the link = round trip + bytes up / upload speed + bytes down / download speed, all from
the link's measured probe. Prompt processing pays the same per micro-batch, spread over its tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from homellm.catalog.schema import Architecture
from homellm.hardware.types import LinkSpeed

F32 = 4
MESSAGE = 9 + 296  # a command header plus the tensor description every SET_TENSOR / GET_TENSOR carries
INPUT_MESSAGES = 7  # ffn_inp, ffn_out, positions, K slots, V slots, mask, output ids
KV_PAD = 256  # llama.cpp sizes the attention over the filled cells in steps of 256


@dataclass(frozen=True)
class LinkCost:
    """One decoded token's traffic over one link, and its time."""

    worker: str
    round_trips: int
    up_bytes: int
    down_bytes: int
    seconds: float


def _kv_cells(arch: Architecture, filled: int) -> int:
    cells = -(-max(filled, 1) // KV_PAD) * KV_PAD
    return min(cells, arch.sliding_window) if arch.sliding_window and arch.swa_pattern == 0 else cells


def token_traffic(arch: Architecture, filled: int, output_remote: bool, n_tokens: int = 1) -> tuple[int, int]:
    """(bytes up, bytes down) for ``n_tokens`` tokens in one batch, with ``filled`` cells of context."""
    up = (
        n_tokens * (2 * arch.n_embd * F32 + 8 * arch.n_head_kv * arch.head_dim_v + 8 + 4 + 4)
        + _kv_cells(arch, filled) * n_tokens * F32  # the mask: one row of cells per token
        + INPUT_MESSAGES * MESSAGE
        + MESSAGE  # the GET_TENSOR asking for the result
        + 13  # GRAPH_RECOMPUTE
    )
    result = arch.n_vocab if output_remote else arch.n_embd
    down = 8 + result * F32  # the output of the last token of the batch (llama.cpp keeps only that one's logits)
    return up, down


def link_cost(
    arch: Architecture, filled: int, output_remote: bool, worker: str, link: LinkSpeed, n_tokens: int = 1
) -> LinkCost:
    up, down = token_traffic(arch, filled, output_remote, n_tokens)
    seconds = link.rtt_s + up / link.up_bytes_per_s + down / link.down_bytes_per_s
    return LinkCost(worker, 1, up, down, seconds)
