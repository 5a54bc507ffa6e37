"""How records become token ids, declared once: settings of `PipelineConfig` (YAML keys and
flags) that `AlolConfig` and the reference pass, decoding and the value head take from here."""

from __future__ import annotations

from dataclasses import dataclass

from alol.setting_checks import at_least, one_of, option


@dataclass
class RecordSettings:
    """Prompt and response lengths, how plain-string prompts are rendered, and which responses
    of pairs and ranked records the pointwise objectives train on."""

    max_prompt_length: int = option(
        640, "Prompt tokens kept, truncated from the left.", check=at_least(1)
    )
    max_response_length: int = option(
        128, "Response tokens kept (EOS included), truncated from the right.", check=at_least(1)
    )
    string_prompts: str = option(
        "chat",
        "Plain-string prompts, when the model's tokenizer has a chat template: 'chat' renders "
        "each as one user turn of it (instruct models answer raw text badly, often with "
        "nothing); 'raw' keeps the text as it is. Message-list prompts always use the template.",
        check=one_of("chat", "raw"),
    )
    train_responses: str = option(
        "preferred",
        "Pairs and ranked records (HH/PRO files): 'preferred' trains SFT and the pointwise "
        "objectives (nll, wbc, r_gold, r_lol, A-LoL) on the preferred response only (chosen; "
        "the first candidate, HH's human-preferred one), as the paper's HH recipe; 'all' on "
        "every response with its reward. DPO, PRO and KTO always use every response.",
        ("sft", "advantage", "train"),
        check=one_of("preferred", "all"),
    )
