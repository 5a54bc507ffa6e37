"""The default demo: a tiny Llama and its tokenizer trained from scratch on the embedded noisy
task (`alol.demo.task`), all in minutes on a CPU."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alol.config import PipelineConfig
from alol.data.formats import save_records
from alol.demo import task as demo_task
from alol.demo.config import DemoConfig
from alol.demo.tiny_models import build_tiny_model, save_tiny, train_tokenizer


@dataclass(frozen=True)
class TinySettings:
    """Sizes of the tiny run: big enough to learn the task, small enough for 2 CPU cores."""

    topics: int
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    sft_steps: int
    train_steps: int
    batch_size: int
    learning_rate: float
    value_epochs: int


TINY = TinySettings(
    topics=len(demo_task.TOPICS),
    vocab_size=640,
    hidden_size=128,
    num_layers=2,
    num_heads=4,
    sft_steps=600,
    train_steps=300,
    batch_size=32,
    learning_rate=2e-3,
    value_epochs=30,
)


TINY_QUICK = TinySettings(
    topics=6,
    vocab_size=400,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    sft_steps=6,
    train_steps=4,
    batch_size=16,
    learning_rate=2e-3,
    value_epochs=2,
)


def prepare_tiny(config: DemoConfig, echo: Callable[[str], None]) -> PipelineConfig:
    """Write the task data, train a tokenizer on it and build a tiny Llama, all in run_dir."""
    settings = TINY_QUICK if config.quick else TINY
    root = Path(config.run_dir)
    task = demo_task.build_task(
        demo_task.TaskConfig(seed=config.seed, topics=demo_task.TOPICS[: settings.topics])
    )
    echo(
        f"demo task: {len(task.train)} training answers to {len({e.prompt for e in task.train})} "
        f"prompts ({_kind_shares(e.kind for e in task.train)}); "
        f"{len({e.prompt for e in task.test})} held-out test prompts"
    )
    data = write_task_data(task, root / "data")
    base = build_base_model(task, settings, config.seed, root / "base")
    return PipelineConfig(
        model=str(base),
        train_data=str(data["train"]),
        val_data=str(data["val"]),
        test_data=str(data["test"]),
        run_dir=str(root),
        reward=demo_task.REWARD_SPEC,
        judges=[demo_task.JUDGE_SPEC],
        seed=config.seed,
        max_prompt_length=48,
        max_response_length=48,
        objectives=list(config.objectives),
        sft_max_steps=settings.sft_steps,
        max_steps=settings.train_steps,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        logging_steps=max(1, settings.train_steps // 30),
        save_steps=10 * settings.sft_steps,
        value_epochs=settings.value_epochs,
        value_learning_rate=3e-3,
        # Every trainer here (π_ref's SFT and each objective) draws in passes. A-LoL's ~80
        # steps of 32 draws make ~10 passes over its ~260 positive answers: drawn with
        # replacement, the top few were drawn dozens of times and the tiny model learnt one of
        # them for every prompt (2 of 5 seeds). In passes each is drawn once per pass, still
        # in an order ∝ A.
        sample_in_passes=True,
        generation_batch_size=64,
    )


def write_task_data(task: demo_task.DemoTask, directory: Path) -> dict[str, Path]:
    """train/val/test JSONL files in alol's reward-record format."""
    paths = {}
    for split in ("train", "val", "test"):
        paths[split] = directory / f"{split}.jsonl"
        save_records(demo_task.to_records(getattr(task, split), split), paths[split])
    return paths


def build_base_model(
    task: demo_task.DemoTask, settings: TinySettings, seed: int, directory: Path
) -> Path:
    """A tokenizer trained on the task's text and a freshly initialised tiny Llama, on disk.

    The pipeline loads it back with `from_pretrained`, the path users' models take. The same
    seed writes the same files, so a rerun finds its finished stages up to date.
    """
    examples = task.train + task.val + task.test
    texts = [e.prompt for e in examples] + [e.response for e in examples]
    tokenizer = train_tokenizer(texts, vocab_size=settings.vocab_size)
    tokenizer.chat_template = None
    model = build_tiny_model(
        tokenizer,
        architecture="llama",
        hidden_size=settings.hidden_size,
        num_layers=settings.num_layers,
        num_heads=settings.num_heads,
        max_positions=256,
        seed=seed,
    )
    return save_tiny(model, tokenizer, directory)


def _kind_shares(kinds) -> str:
    counts = Counter(kinds)
    total = sum(counts.values())
    return ", ".join(f"{kind} {counts[kind] / total:.0%}" for kind in demo_task.KINDS)
