"""The names settings choose among: objectives and online methods (with the line `--help`
shows for each), sampling orders, compile modes, learning-rate schedules and the demo's models.

Nothing here imports torch or transformers, so the command line builds its parser and checks
every argument and setting before those load (seconds): a mistyped flag or value is answered at
once. The modules that implement each choice import their names from here.
"""

from __future__ import annotations

OBJECTIVE_SUMMARIES = {
    "nll": "negative log-likelihood (SFT / behaviour cloning)",
    "wbc": "reward-weighted behaviour cloning (weighted SFT)",
    "r_gold": "GOLD (Pang & He, 2021) with a sequence reward",
    "r_lol": "reward × clipped sequence importance weight × NLL",
    "a_lol": "A-LoL: advantage × clipped sequence importance weight × NLL",
    "a_lol_ref_free": "A-LoL without importance weight: advantage × NLL",
    "a_lol_seq": "A-LoL with a clipped importance weight per token",
    "a_lol_kl": "A-LoL with a KL-style reference penalty instead of a weight",
    "dpo": "direct preference optimization (Rafailov et al., 2023)",
    "dpo_ref_free": "DPO without a reference model",
    "kto": "Kahneman-Tversky optimization (Ethayarajh et al., 2024), as TRL's KTOTrainer",
    "pro": "preference ranking optimization (Song et al., 2023)",
}
"""The offline objectives of `alol.method.objectives.OBJECTIVES`, each with its line for --help."""

ONLINE_SUMMARIES = {
    "ppo": "PPO through TRL: a sequence-classifier reward model on the policy's tokenizer "
    "(e.g. `alol reward-model --reward-model <base model>`); its value model starts from it",
    "rloo": "RLOO through TRL: any alol reward; num_generations samples per prompt",
    "grpo": "GRPO through TRL: any alol reward; num_generations samples per prompt",
}
"""The online methods of `alol.train.online` (`alol online --method`)."""

ONLINE_METHODS = tuple(ONLINE_SUMMARIES)

SAMPLING_CHOICES = ("uniform", "advantage", "reward")
"""How training examples are drawn: uniformly, ∝ A (the paper's priority sampling), or ∝ R."""

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""`torch.compile` modes (`alol.models.compilation`)."""

SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
)
"""transformers' `SchedulerType` values (a test keeps them equal)."""

DEMO_MODELS = ("tiny", "smollm2")
"""`alol demo --model`: a tiny Llama trained on the spot, or SmolLM2-135M-Instruct."""

DEMO_OBJECTIVES = {"tiny": ("a_lol_seq", "nll", "wbc"), "smollm2": ("a_lol_seq", "nll")}
"""What `alol demo` trains and compares unless told otherwise, per demo model. A-LoL's per-token
variant: on the demo task it beats π_ref and NLL on every seed of `bench.quality`, where the
sequence-level importance weight of plain `a_lol` is noisier on a tiny model. SmolLM2 leaves
wbc out so the run stays within 10 minutes on a 2-core CPU (`--objectives` adds it back)."""
