"""Log-probabilities of response tokens, without full-vocabulary logits for the prompt.

Only response tokens are scored, yet a training sequence is mostly prompt (640 of 768 tokens
in the paper's HH setup). A model's own forward runs the LM head at every position and builds
a `[B, L, V]` float tensor (4 x 768 x 32000 x 4 bytes = 393 MB), five sixths of it discarded.
Here the decoder body runs once, only the hidden states that *predict* response tokens are
gathered, and only they meet the output embedding. With `vocab_chunk_size`, the vocabulary is
visited a slice at a time, so not even the `[N, V]` logits of the N response tokens exist at
once, in the forward or the backward pass.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from peft import PeftModel
from torch import Tensor, nn

from alol.data.collate import locate_response_tokens


@dataclass(frozen=True)
class LogitTransform:
    """What a model does to its LM-head output before the softmax: `cap * tanh(scale * x / cap)`.

    Read from the config, because the decoder body + output embedding that this module calls
    bypass the model's own forward, where these transforms live. Known configs: `logit_scale`
    (Cohere: multiply), `logits_scaling` (Granite: divide), `final_logit_softcapping` (Gemma 2
    and later). Any other post-head transform a model may apply is NOT reproduced; the tests
    prove each supported one against the model's own forward.
    """

    scale: float = 1.0
    softcap: float | None = None

    def __call__(self, logits: Tensor) -> Tensor:
        if self.softcap is None:
            return logits if self.scale == 1.0 else logits * self.scale
        return self.softcap * torch.tanh(logits * self.scale / self.softcap)

    def derivative(self, logits: Tensor) -> Tensor | float:
        """d transform(x) / dx, elementwise (a constant without softcapping)."""
        if self.softcap is None:
            return self.scale
        return self.scale * (1 - torch.tanh(logits * self.scale / self.softcap) ** 2)


def logit_transform_from_config(config) -> LogitTransform:
    """The transform a transformers config implies (identity for GPT-2, Llama, Mistral, ...)."""
    text_config = config.get_text_config()
    scale = getattr(text_config, "logit_scale", None) or 1.0
    if getattr(text_config, "logits_scaling", None):
        scale = scale / text_config.logits_scaling
    return LogitTransform(
        scale=float(scale), softcap=getattr(text_config, "final_logit_softcapping", None)
    )


def position_ids_from_attention_mask(attention_mask: Tensor) -> Tensor:
    """Positions counted over real tokens only, so a left-padded row sees the positions
    (0, 1, 2, ...) it would see unpadded. Models that default to `arange(L)` would otherwise
    shift a left-padded row's absolute positions (GPT-2) by its padding length."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_token_logprobs(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_mask: Tensor,
    vocab_chunk_size: int | None = None,
    response_positions: Tensor | None = None,
    right_padded: bool = False,
) -> Tensor:
    """`[B, L]` float32: position t holds log pi(input_ids[t] | input_ids[:t]) where
    `response_mask[:, t]`, else 0. Differentiable; the same call serves precompute and training.

    `vocab_chunk_size=None` applies the output embedding as a module (so LoRA on `lm_head` works)
    to the N response positions; an int computes the softmax normaliser over vocabulary slices
    of that size and recomputes them in backward, so memory is O(N x chunk) instead of O(N x V).
    Log-softmax is always computed in float32, whatever the model's dtype.

    Two options keep host syncs out of a training step: the batch's `response_positions`
    (else they are found here, after the masks' values are checked: three syncs on an
    accelerator), and `right_padded`, for batches whose padding follows every row's tokens
    (collate_pairs' default). Causal attention alone then keeps real tokens from seeing
    padding, and their positions are 0, 1, 2, ..., so the decoder gets neither an attention
    mask nor position ids: transformers builds no [B, 1, L, L] mask, reads one value on the
    host instead of two (its packed-sequence check), and SDPA can use its fused causal
    kernel. Padding positions' states differ, but nothing reads them.
    """
    token_logps, _ = response_token_logprobs_and_hidden_states(
        model,
        input_ids,
        attention_mask,
        response_mask,
        vocab_chunk_size,
        response_positions,
        right_padded,
    )
    return token_logps


def response_token_logprobs_and_hidden_states(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_mask: Tensor,
    vocab_chunk_size: int | None = None,
    response_positions: Tensor | None = None,
    right_padded: bool = False,
) -> tuple[Tensor, Tensor]:
    """`response_token_logprobs`, plus the decoder's last-layer hidden states `[B, L, H]` (in the
    model's dtype) that the log-probs were computed from. With `right_padded`, padding
    positions' states are not those of a masked pass: read only real positions.

    The precompute reads V(x) off the prompt positions of these states instead of running the
    reference over the prompts a second time: attention is causal and positions are counted
    from the attention mask, so a prompt position's state is the one the prompt alone gives.
    """
    _check_shapes(input_ids, attention_mask, response_mask)
    if response_positions is None:
        _check_mask_values(attention_mask, response_mask)
        response_positions = locate_response_tokens(response_mask)
    decoder = causal_lm(model).get_decoder()
    if right_padded:  # real tokens sit at 0, 1, 2, ...: the model's default positions
        hidden = decoder(input_ids=input_ids, use_cache=False).last_hidden_state
    else:
        hidden = decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_attention_mask(attention_mask),
            use_cache=False,
        ).last_hidden_state
    rows, cols = response_positions
    predicting_hidden = hidden[rows, cols - 1]  # the state at t-1 predicts the token at t
    logps = token_logprobs_from_hidden_states(
        model, predicting_hidden, input_ids[rows, cols], vocab_chunk_size
    )
    token_logps = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    return token_logps.index_put((rows, cols), logps), hidden


SEQUENCE_AWARE_ATTENTION = ("flex_attention", "flash_attention_2", "flash_attention_3")
"""Attention implementations that find packed sequences in the position ids themselves:
flash-attention's variable-length kernels and flex attention's block mask skip the
cross-sequence blocks, where a dense mask would compute the whole [T, T] product."""


def packed_attention_mask(model: nn.Module, position_ids: Tensor) -> Tensor | None:
    """What keeps a packed row's sequences apart: nothing for an implementation that reads the
    boundaries off `position_ids` (`SEQUENCE_AWARE_ATTENTION`, and kernels-hub flash
    attention), else the block-causal additive mask `[1, 1, T, T]` float32 (0 where a token
    may attend: its own sequence's earlier tokens; the float minimum elsewhere), which every
    other implementation reads alike. Built on the row's device, never shipped by the loader.
    """
    implementation = causal_lm(model).config._attn_implementation or "eager"
    if implementation in SEQUENCE_AWARE_ATTENTION or "flash" in implementation:
        return None
    positions = position_ids[0]
    segment = (positions == 0).cumsum(0)
    index = torch.arange(positions.numel(), device=positions.device)
    allowed = (segment[:, None] == segment[None, :]) & (index[:, None] >= index[None, :])
    mask = torch.zeros(allowed.shape, device=positions.device)
    return mask.masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]


def packed_response_token_logprobs(
    model: nn.Module,
    packed_input_ids: Tensor,
    packed_position_ids: Tensor,
    packed_response_columns: Tensor,
    response_positions: Tensor,
    shape: torch.Size,
    vocab_chunk_size: int | None = None,
) -> Tensor:
    """`response_token_logprobs` of a batch packed into one row (`alol.data.collate.pack_pairs`):
    the decoder runs over the real tokens only, with positions restarting per sequence and
    the sequences kept apart (`packed_attention_mask`), and the log-probs come back in the
    padded batch's `[B, L]` layout.

    The same numbers as the padded pass up to float rounding. The padding's compute is saved
    (2-10% of an HH batch); under SDPA or eager attention the dense mask costs attention over
    the whole row instead (flex attention or flash-attention skip it).
    """
    hidden = (
        causal_lm(model)
        .get_decoder()(
            input_ids=packed_input_ids,
            position_ids=packed_position_ids,
            attention_mask=packed_attention_mask(model, packed_position_ids),
            use_cache=False,
        )
        .last_hidden_state[0]
    )
    targets = packed_input_ids[0, packed_response_columns]
    logps = token_logprobs_from_hidden_states(
        model, hidden[packed_response_columns - 1], targets, vocab_chunk_size
    )
    token_logps = torch.zeros(shape, dtype=torch.float32, device=packed_input_ids.device)
    return token_logps.index_put(tuple(response_positions), logps)


def token_logprobs_from_hidden_states(
    model: nn.Module,
    predicting_hidden: Tensor,
    targets: Tensor,
    vocab_chunk_size: int | None = None,
) -> Tensor:
    """`[N]` float32: log pi(targets[i]) under the next-token distribution that the decoder's
    last-layer state `predicting_hidden[i]` `[N, H]` gives. The one LM-head path: the model's
    output embedding (whole, or in vocabulary slices), its logit transform, a float32
    log-softmax, whichever forward produced the states (one pass over prompt + response, or a
    shared prompt's cache continued by each of its responses)."""
    base = causal_lm(model)
    head = base.get_output_embeddings()
    transform = logit_transform_from_config(base.config)
    if vocab_chunk_size is None:
        return full_vocab_token_logprobs(predicting_hidden, head, targets, transform).float()
    weight, bias = _linear_head_parameters(head)
    return chunked_token_logprobs(
        predicting_hidden, weight, bias, targets, vocab_chunk_size, transform
    ).float()


def sequence_logprobs(token_logps: Tensor, response_mask: Tensor) -> Tensor:
    """`[B]`: log pi(y|x), the sum of the response tokens' log-probs."""
    return torch.where(response_mask, token_logps, 0.0).sum(-1)


def naive_response_token_logprobs(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor
) -> Tensor:
    """Reference implementation through the model's own forward: full `[B, L, V]` logits,
    log-softmax, gather. For tests and the benchmark; it is what the fast path must equal."""
    _check_masks(input_ids, attention_mask, response_mask)
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_attention_mask(attention_mask),
        use_cache=False,
    ).logits
    next_token_logps = logits[:, :-1].float().log_softmax(-1)
    logps = next_token_logps.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    token_logps = torch.nn.functional.pad(logps, (1, 0))  # position 0 predicts nothing
    return torch.where(response_mask, token_logps, 0.0)


def full_vocab_token_logprobs(
    hidden: Tensor, head: nn.Module, targets: Tensor, transform: LogitTransform
) -> Tensor:
    """`[N]` log-probs of `targets` from `hidden` `[N, H]`, with all N x V logits at once."""
    logits = transform(head(hidden).float())
    return logits.log_softmax(-1).gather(-1, targets[:, None]).squeeze(-1)


def chunked_token_logprobs(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    targets: Tensor,
    vocab_chunk_size: int,
    transform: LogitTransform = LogitTransform(),
) -> Tensor:
    """`[N]` log-probs of `targets` under `transform(hidden @ weight.T + bias)`, never holding
    more than `N x vocab_chunk_size` logits, in forward or backward. Float32, or float64 for
    float64 inputs."""
    if not isinstance(vocab_chunk_size, int) or vocab_chunk_size < 1:
        raise ValueError(
            f"vocab_chunk_size must be a positive integer or None, got {vocab_chunk_size!r}"
        )
    return _ChunkedTokenLogprobs.apply(hidden, weight, bias, targets, vocab_chunk_size, transform)


def _without_autocast(method):
    """Run forward and backward with autocast off. Backward recomputes forward's logits, and
    autocast is not active where autograd runs backward: both must do the same arithmetic."""

    @functools.wraps(method)
    def wrapper(ctx, *args):
        with torch.autocast(device_type=args[0].device.type, enabled=False):
            return method(ctx, *args)

    return wrapper


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """log p(target) = z[target] - logsumexp(z), z = transform(h W^T + b), one vocabulary slice
    at a time. Backward recomputes each slice's logits instead of saving them:
    d logp / d z_v = 1[v = target] - softmax(z)_v."""

    @staticmethod
    @_without_autocast
    def forward(ctx, hidden, weight, bias, targets, chunk_size, transform):
        n, dtype = hidden.shape[0], _at_least_float32(hidden.dtype)
        logsumexp = torch.full((n,), -torch.inf, dtype=dtype, device=hidden.device)
        target_logits = torch.zeros(n, dtype=dtype, device=hidden.device)
        for start in range(0, weight.shape[0], chunk_size):
            end = start + chunk_size
            logits = transform(_slice_logits(hidden, weight, bias, start, end))
            logsumexp = torch.logaddexp(logsumexp, logits.logsumexp(-1))
            local, in_slice = _targets_in_slice(targets, start, logits.shape[1])
            target_logits += torch.where(in_slice, logits.gather(1, local[:, None])[:, 0], 0.0)
        ctx.save_for_backward(hidden, weight, bias, targets, logsumexp)
        ctx.chunk_size, ctx.transform = chunk_size, transform
        return target_logits - logsumexp

    @staticmethod
    @_without_autocast
    def backward(ctx, grad_logps):
        hidden, weight, bias, targets, logsumexp = ctx.saved_tensors
        wants_hidden, wants_weight, wants_bias = ctx.needs_input_grad[:3]
        grad_hidden = (
            torch.zeros_like(hidden, dtype=_at_least_float32(hidden.dtype))
            if wants_hidden
            else None
        )
        grad_weight = torch.zeros_like(weight) if wants_weight else None
        grad_bias = torch.zeros_like(bias) if wants_bias else None
        for start in range(0, weight.shape[0], ctx.chunk_size):
            end = start + ctx.chunk_size
            pre_logits = _slice_logits(hidden, weight, bias, start, end)
            probs = torch.exp(ctx.transform(pre_logits) - logsumexp[:, None])
            grad_logits = -probs * grad_logps[:, None]
            local, in_slice = _targets_in_slice(targets, start, pre_logits.shape[1])
            grad_logits.scatter_add_(
                1, local[:, None], torch.where(in_slice, grad_logps, 0.0)[:, None]
            )
            # Cast to the model dtype before the matmuls, as autograd does through `.float()`.
            grad_pre = (grad_logits * ctx.transform.derivative(pre_logits)).to(hidden.dtype)
            if wants_hidden:
                grad_hidden += grad_pre @ weight[start:end].to(hidden.dtype)
            if wants_weight:
                grad_weight[start:end] = grad_pre.T @ hidden
            if wants_bias:
                grad_bias[start:end] = grad_pre.sum(0)
        if wants_hidden:
            grad_hidden = grad_hidden.to(hidden.dtype)
        return grad_hidden, grad_weight, grad_bias, None, None, None


def _slice_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, start: int, end: int):
    """Logits (float32 or wider) for vocabulary ids [start, end), before any transform; the
    matmul runs in the hidden states' dtype."""
    logits = hidden @ weight[start:end].to(hidden.dtype).T
    if bias is not None:
        logits = logits + bias[start:end].to(hidden.dtype)
    return logits.to(_at_least_float32(logits.dtype))


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """float32 for half precisions; float64 stays float64 (gradcheck needs it)."""
    return torch.promote_types(dtype, torch.float32)


def _targets_in_slice(targets: Tensor, start: int, width: int) -> tuple[Tensor, Tensor]:
    """Targets as column indices into the slice (clamped, so always safe to gather) and
    whether each target actually falls inside it."""
    local = targets - start
    in_slice = (local >= 0) & (local < width)
    return local.clamp(0, width - 1), in_slice


def causal_lm(model: nn.Module) -> nn.Module:
    """The transformers model, under a peft wrapper if there is one. LoRA layers are injected
    into it in place, so its decoder runs them; prompt-learning adapters live in
    PeftModel.forward instead."""
    if isinstance(model, PeftModel):
        if model.active_peft_config.is_prompt_learning:
            raise ValueError(
                "response_token_logprobs runs the decoder body directly and so cannot apply "
                f"prompt-learning adapters ({model.active_peft_config.peft_type}); use LoRA-style "
                "adapters, or naive_response_token_logprobs, which goes through model.forward"
            )
        model = model.get_base_model()
    if not hasattr(model, "get_decoder") or not hasattr(model, "get_output_embeddings"):
        raise TypeError(
            f"response_token_logprobs needs a transformers causal LM (optionally peft-wrapped), "
            f"got {type(model).__name__}. Under DDP/FSDP, call it inside the wrapped module's "
            "forward: calling the inner model directly would skip gradient synchronisation"
        )
    return model


def _linear_head_parameters(head: nn.Module) -> tuple[Tensor, Tensor | None]:
    """Weight and bias of a plain linear LM head, which vocabulary chunking slices."""
    if type(head) is not nn.Linear:
        raise ValueError(
            f"vocab_chunk_size needs the output embedding to be a plain torch.nn.Linear, but it "
            f"is {type(head).__name__} (e.g. LoRA or modules_to_save on lm_head); "
            "pass vocab_chunk_size=None for this model"
        )
    return head.weight, head.bias


def _check_masks(input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor) -> None:
    _check_shapes(input_ids, attention_mask, response_mask)
    _check_mask_values(attention_mask, response_mask)


def _check_shapes(input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor) -> None:
    """Shapes and dtypes only: metadata, no host sync."""
    if not input_ids.shape == attention_mask.shape == response_mask.shape:
        raise ValueError(
            "input_ids, attention_mask and response_mask must have the same [B, L] shape, got "
            f"{tuple(input_ids.shape)}, {tuple(attention_mask.shape)}, {tuple(response_mask.shape)}"
        )
    if response_mask.dtype != torch.bool:
        raise ValueError(f"response_mask must be a bool tensor, got {response_mask.dtype}")


def _check_mask_values(attention_mask: Tensor, response_mask: Tensor) -> None:
    """Reads the masks' values: a host sync per check on an accelerator. collate_pairs builds
    masks that pass by construction, so the training step, given positions, skips this."""
    if response_mask[:, 0].any():
        raise ValueError(
            "response_mask is True at position 0, where no token precedes it; every sequence "
            "needs at least one prompt token before its response"
        )
    if (response_mask & ~attention_mask.bool()).any():
        raise ValueError(
            "response_mask marks padding (attention_mask == 0) as response; check the collation"
        )
