"""From a record's prompt and response to token ids, the same way for training, the precompute,
value fitting and decoding: rendering (chat template or the plain template), truncation, EOS,
and the pad token every batch needs."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from alol.data.records import Prompt
from alol.errors import AlolError

logger = logging.getLogger(__name__)

PLAIN_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


PLAIN_TURN_SEPARATOR = "\n\n"


PLAIN_GENERATION_PROMPT = "Assistant:"
"""The plain chat template, used when the tokenizer has none. Messages render as

    User: How do I bake bread?

    Assistant: Mix flour, water, salt and yeast.

    User: And then?

    Assistant:

one "<Role>: <content>" per message (roles outside PLAIN_ROLE_NAMES are capitalised), separated
by a blank line, ending with "Assistant:". The response follows the colon as it is written; no
space is inserted."""


STRING_PROMPTS = ("chat", "raw")
"""How a plain-string prompt reaches a model whose tokenizer has a chat template: as a single
user turn of that template ("chat"), or as the raw text ("raw")."""


def render_prompt(prompt: Prompt, tokenizer, string_prompts: str = "chat") -> str:
    """The text the model sees before its response.

    Messages go through the tokenizer's chat template with the generation prompt added, or
    through the plain template (PLAIN_GENERATION_PROMPT) when the tokenizer has none. A string
    is, by default, a single user turn of the chat template when there is one: an instruct
    model given raw text often answers nothing at all (SmolLM2-Instruct answers "What is 84
    plus 32?" with an empty string). `string_prompts="raw"` passes strings through unchanged,
    as does a tokenizer without a chat template.
    """
    if string_prompts not in STRING_PROMPTS:
        raise ValueError(f"string_prompts must be one of {STRING_PROMPTS}, got {string_prompts!r}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if isinstance(prompt, str):
        if not has_template or string_prompts == "raw":
            return prompt
        _announce_chat_rendering(tokenizer.name_or_path)
        prompt = [{"role": "user", "content": prompt}]
    if has_template:
        return _apply_chat_template(prompt, tokenizer)
    return render_plain_chat(prompt)


def _apply_chat_template(messages: list[dict[str, str]], tokenizer) -> str:
    """Templates refuse what their model was not trained on (a system turn, turns that do not
    alternate) by raising inside Jinja; say which model's template refused which roles."""
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except TemplateError as error:
        roles = [message["role"] for message in messages]
        raise AlolError(
            f"the chat template of {tokenizer.name_or_path or 'the tokenizer'} refused a prompt "
            f"with the roles {roles} ({error}); give prompts whose roles it accepts, or a model "
            "whose template takes these"
        ) from None


@functools.cache
def _announce_chat_rendering(model_name: str) -> None:
    logger.info(
        "plain-string prompts are rendered as one user turn of %s's chat template "
        "(string_prompts='raw' keeps them as they are)",
        model_name or "the tokenizer",
    )


def render_plain_chat(messages: list[dict[str, str]]) -> str:
    turns = [
        f"{PLAIN_ROLE_NAMES.get(m['role'], m['role'].capitalize())}: {m['content']}"
        for m in messages
    ]
    return PLAIN_TURN_SEPARATOR.join([*turns, PLAIN_GENERATION_PROMPT])


@dataclass
class TokenizedPair:
    prompt_ids: list[int]
    response_ids: list[int]
    """Ends with EOS, unless the response was cut at `max_response_length`."""
    prompt_cut: bool = False
    """The prompt lost tokens from its start to fit `max_prompt_length`."""
    response_cut: bool = False
    """The response (with its EOS) was longer than `max_response_length`: it ends where it was
    cut, without EOS, so the policy never learns to stop mid-sentence."""

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)


def tokenize_pair(
    tokenizer,
    prompt_text: str,
    response_text: str,
    max_prompt_length: int,
    max_response_length: int,
) -> TokenizedPair:
    """Token ids of one (prompt, response), ready for `collate_pairs`.

    - The prompt is encoded as `encode_prompt` does (cut from the LEFT: the turns nearest the
      response matter most; the tokenizer's BOS kept once).
    - The response gets EOS appended and is then cut from the RIGHT to `max_response_length`
      tokens, as the A-LoL authors do: a complete response ends with EOS, which belongs to the
      response and is trained, so the policy learns to stop; a cut one ends where it was cut.

    Prompt and response are tokenized apart, so the ids at their seam can differ from tokenizing
    the joined text; decoding continues from the same prompt ids, so training and decoding agree.
    """
    if max_prompt_length < 1 or max_response_length < 1:
        raise ValueError(
            f"max_prompt_length and max_response_length must be at least 1, got {max_prompt_length} "
            f"and {max_response_length}"
        )
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError(
            "the tokenizer has no EOS token; set tokenizer.eos_token before tokenizing"
        )
    prompt_ids, prompt_cut = _prompt_ids(tokenizer, prompt_text, max_prompt_length)
    response_ids = _encode(tokenizer, response_text) + [eos]
    return TokenizedPair(
        prompt_ids,
        response_ids[:max_response_length],
        prompt_cut=prompt_cut,
        response_cut=len(response_ids) > max_response_length,
    )


def response_is_cut(tokenizer, response_text: str, max_response_length: int) -> bool:
    """Whether `tokenize_pair` cuts this response before its EOS (its ids do not depend on the
    prompt)."""
    return len(_encode(tokenizer, response_text)) + 1 > max_response_length


def encode_prompt(tokenizer, prompt_text: str, max_prompt_length: int) -> list[int]:
    """Prompt ids exactly as training, value fitting and decoding see them.

    The text is encoded without special tokens, then the tokenizer's BOS is put back in front
    if the tokenizer adds one (Llama-style) and the text did not already start with it (a chat
    template that writes BOS itself): BOS appears exactly once. A long prompt is cut from the
    left, after BOS. An empty prompt becomes [BOS] ([EOS] without a BOS), so position 0 is
    never a response token and decoding always has a context.
    """
    return _prompt_ids(tokenizer, prompt_text, max_prompt_length)[0]


def _prompt_ids(tokenizer, prompt_text: str, max_prompt_length: int) -> tuple[list[int], bool]:
    """(ids, whether the prompt was cut)."""
    ids = _encode(tokenizer, prompt_text)
    bos = leading_bos_id(tokenizer)
    if bos is not None and ids[:1] == [bos]:
        ids = ids[1:]
    room = max_prompt_length - (bos is not None)
    cut = len(ids) > room
    ids = ids[max(len(ids) - room, 0) :] if room > 0 else []
    if bos is not None:
        ids = [bos, *ids]
    if not ids:
        fallback = tokenizer.bos_token_id
        ids = [fallback if fallback is not None else tokenizer.eos_token_id]
    return ids, cut


@functools.cache
def leading_bos_id(tokenizer) -> int | None:
    """The BOS id the tokenizer puts before a text when it adds its special tokens (Llama,
    Mistral, Gemma), or None when it adds none (GPT-2, Qwen, SmolLM2: their chat templates
    carry what they need)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return None
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    without = tokenizer("a", add_special_tokens=False)["input_ids"]
    return bos if with_special[:1] == [bos] and without[:1] != [bos] else None


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def pad_token_id_of(tokenizer) -> int:
    """The tokenizer's pad id, or its EOS id for tokenizers (Llama, GPT-2) that ship without one."""
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    raise ValueError(
        "the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token before decoding"
    )


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Tokenizers such as Llama's and GPT-2's ship without a pad token: pad with EOS.

    Safe because batches mark padding with the attention mask, never by token id.
    """
    if tokenizer.pad_token_id is not None:
        return
    if tokenizer.eos_token is None:
        raise ValueError(
            "the tokenizer has neither a pad token nor an EOS token; set tokenizer.pad_token"
        )
    tokenizer.pad_token = tokenizer.eos_token
