"""Two CPU processes (torchrun, gloo) run alol as they would on two GPUs, and agree with one.

One launch does all the two-process work (starting processes is the slow part): this file
is also the worker script. Each process first builds an AlolTrainer and records the draws its
prepared dataloader yields and the validation metrics of `evaluate()`, then runs `alol run`
(value → advantage → train → eval) from a tiny reference model. The reward function logs
every record it scores into a per-process file, which is how the tests see who computed what.
A second launch shards a model with FSDP2 and checks the log-prob helper through the wrapper.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from alol.cli import load_config, main
from alol.data.examples import ExampleDataset, SequenceExample
from alol.data.formats import load_records
from alol.data.table import AdvantageTable
from alol.data.tokenize import tokenize_pair
from alol.models.generate import GenerationConfig
from alol.models.precompute import AdvantageConfig, compute_advantages
from alol.models.value_io import load_value_head
from alol.rewards import load_reward
from alol.train import AlolConfig, AlolTrainer

BUDGET = 120  # padded tokens per micro-batch: 2 to 5 of the examples below (21 to 48 tokens)
TOPICS = ["bread", "tea", "rain", "music", "books", "cats", "trees", "boats", "maps"]
EVAL_PROMPTS = [f"Say something about {t}?" for t in ("snow", "wind", "fish", "jazz", "milk")]
TEST_PROMPTS = [f"Describe {t}?" for t in ("tea", "cats", "snow")]

REWARD_FILE = '''
import json, os

def politeness(prompts, responses):
    """Kind answers that name the topic score high; every call is logged per process."""
    log_dir = os.environ.get("REWARD_LOG_DIR")
    if log_dir:
        with open(os.path.join(log_dir, f"{os.getpid()}.jsonl"), "a") as log:
            for prompt, response in zip(prompts, responses):
                log.write(json.dumps({"prompt": prompt, "response": response}) + "\\n")
    return [
        {"kind": 0.6 * ("happy" in r), "on_topic": 0.4 * (p.split()[-1].rstrip("?") in r)}
        for p, r in zip(prompts, responses)
    ]
'''


def train_rows() -> list[dict]:
    rows = []
    for i, topic in enumerate(TOPICS):
        other = TOPICS[(i + 1) % len(TOPICS)]
        for response in (
            f"I am happy to help with {topic}.",
            f"No. {topic} is dull.",
            f"I am happy to help with {other}.",
        ):
            rows.append({"prompt": f"Tell me about {topic}?", "response": response})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def pipeline_config(workspace: Path, reference: Path) -> dict:
    val = [{"prompt": f"What about {t}?", "response": "ok", "reward": 0.5} for t in TOPICS[:5]]
    return {
        "reference": str(reference),
        "train_data": str(write_jsonl(workspace / "train.jsonl", train_rows())),
        "val_data": str(write_jsonl(workspace / "val.jsonl", val)),
        "test_data": str(
            write_jsonl(workspace / "test.jsonl", [{"prompt": p} for p in TEST_PROMPTS])
        ),
        "reward": f"{workspace / 'reward.py'}:politeness",
        "run_dir": str(workspace / "run"),
        "objectives": ["a_lol"],
        "max_steps": 4,
        "scale_steps_by_positive_fraction": False,
        "batch_size": 2,  # per process: a global batch of 4 on two processes
        "learning_rate": 1e-3,
        "max_prompt_length": 24,
        "max_response_length": 10,
        "max_new_tokens": 6,
        "logging_steps": 1,
        "save_steps": 2,
        "value_epochs": 2,
        "generation_batch_size": 3,
    }


# ---------------------------------------------------------------------------------------------
# The worker: what each of the two processes runs


def sampler_trainer(
    reference: Path,
    output_dir: Path,
    per_device_batch: int,
    max_tokens: int | None = None,
    accumulation: int = 1,
) -> AlolTrainer:
    """12 examples of distinct lengths, drawn ∝ 1..12, for 3 steps of a global batch of 4 (or of
    token-budget batches, one per process and step)."""
    tokenizer = AutoTokenizer.from_pretrained(reference)
    examples = [
        SequenceExample(
            tokenize_pair(tokenizer, f"Tell me {'very ' * i}much?", f"Sure {i}.", 40, 8),
            index=i,
            reward=1.0,
        )
        for i in range(12)
    ]
    args = AlolConfig(
        output_dir=str(output_dir),
        objective="wbc",
        max_steps=3,
        per_device_train_batch_size=per_device_batch,
        max_tokens_per_batch=max_tokens,
        gradient_accumulation_steps=accumulation,
        report_to="none",
        disable_tqdm=True,
        seed=3,
    )
    return AlolTrainer(
        AutoModelForCausalLM.from_pretrained(reference),
        args,
        train_dataset=ExampleDataset(examples),
        processing_class=tokenizer,
        sample_weights=[float(i + 1) for i in range(12)],
        reward=load_reward(f"{output_dir.parent / 'reward.py'}:politeness"),
        eval_prompts=EVAL_PROMPTS,
        generation_config=GenerationConfig(max_new_tokens=6),
    )


def draws_per_step(trainer: AlolTrainer) -> list[list[int]]:
    """The example indices each optimizer step trains on, read from Trainer's own dataloader."""
    return [batch["index"].tolist() for batch in trainer.get_train_dataloader()]


def worker(workspace: Path) -> int:
    config = yaml.safe_load((workspace / "config.yaml").read_text())
    trainer = sampler_trainer(Path(config["reference"]), workspace / "sampler", 2)
    rank = trainer.args.process_index
    draws = draws_per_step(trainer)
    budget = sampler_trainer(Path(config["reference"]), workspace / "budget", 2, BUDGET)
    metrics = trainer.evaluate()
    (workspace / f"worker-{rank}.json").write_text(
        json.dumps(
            {
                "world_size": trainer.args.world_size,
                "draws": draws,
                "budget_draws": draws_per_step(budget),
                "eval": metrics,
            }
        )
    )
    code = main(["run", str(workspace / "config.yaml")])
    alive = torch.distributed.is_initialized()
    (workspace / f"after-run-{rank}.json").write_text(json.dumps({"group_alive": alive}))
    return code


def fsdp_worker(reference: Path) -> None:
    """FSDP2 shards a tiny model over the two processes; through the wrapper, the response
    log-probs and the gradients equal an unsharded copy's (full and chunked vocabulary); and
    shards of unequal size decode what the unsharded copy decodes, the process with fewer
    batches decoding fillers so that neither waits for the other's weight gathers forever."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from alol.data.collate import collate_pairs
    from alol.models.generate import GenerationConfig, generate_answers
    from alol.models.logprobs import response_token_logprobs
    from alol.train.wrapping import call_through_wrapper

    dist.init_process_group("gloo")
    tokenizer = AutoTokenizer.from_pretrained(reference)
    sharded = AutoModelForCausalLM.from_pretrained(reference)
    whole = AutoModelForCausalLM.from_pretrained(reference)
    mesh = init_device_mesh("cpu", (2,))
    for layer in sharded.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    pairs = [
        tokenize_pair(tokenizer, f"Tell me {'more ' * i}?", f"Sure {i}.", 16, 8) for i in (1, 3)
    ]
    batch = collate_pairs(pairs, tokenizer.pad_token_id)
    inputs = (batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    for chunk in (None, 100):
        helper = partial(response_token_logprobs, sharded, vocab_chunk_size=chunk)
        got = call_through_wrapper(sharded, sharded, helper, *inputs)
        expected = response_token_logprobs(whole, *inputs, vocab_chunk_size=chunk)
        (got.sum() + expected.sum()).backward()
        torch.testing.assert_close(got, expected)
        for name, parameter in whole.named_parameters():
            sharded_grad = sharded.get_parameter(name).grad.full_tensor()
            torch.testing.assert_close(sharded_grad, parameter.grad, rtol=1e-4, atol=1e-6)
        sharded.zero_grad()
        whole.zero_grad()
    prompts = [f"Tell me {'more ' * i}?" for i in range(3 if dist.get_rank() == 0 else 1)]
    config = GenerationConfig(max_new_tokens=4, batch_size=1)
    decoded = generate_answers(sharded, tokenizer, prompts, config, False)
    alone = generate_answers(whole, tokenizer, prompts, config, False)
    assert [a.token_ids for (a,) in decoded] == [a.token_ids for (a,) in alone]
    # Gloo's barrier waits for every collective queued before it, so neither process tears the
    # group down while the other still runs one (CI saw this worker abort once in ~200 runs).
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    if sys.argv[1] == "fsdp":
        fsdp_worker(Path(sys.argv[2]))
    else:
        sys.exit(worker(Path(sys.argv[1])))


# ---------------------------------------------------------------------------------------------
# The tests


def torchrun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """This file on two CPU processes, as `accelerate launch` starts them on two GPUs."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", __file__, *args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", **(env or {})}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


@pytest.fixture(scope="module")
def launched(tmp_path_factory, tiny_llama_dir) -> Path:
    """Run the worker on two processes once; every test below reads what it left."""
    workspace = tmp_path_factory.mktemp("distributed")
    (workspace / "reward.py").write_text(REWARD_FILE)
    (workspace / "logs").mkdir()
    (workspace / "config.yaml").write_text(
        yaml.safe_dump(pipeline_config(workspace, tiny_llama_dir))
    )
    torchrun(str(workspace), env={"REWARD_LOG_DIR": str(workspace / "logs")})
    return workspace


def scored_by_process(workspace: Path) -> dict[int, list[tuple[str, str]]]:
    """(prompt, response) pairs each process scored, from the reward function's logs."""
    scored = {}
    for log in sorted((workspace / "logs").glob("*.jsonl")):
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        scored[int(log.stem)] = [(row["prompt"], row["response"]) for row in rows]
    return scored


def test_both_processes_joined_one_process_group(launched):
    for rank in (0, 1):
        assert json.loads((launched / f"worker-{rank}.json").read_text())["world_size"] == 2


def test_a_finished_command_leaves_the_process_group(launched):
    """Every process waits for the others, then tears the group down: none exits with it alive
    (PyTorch warns of that, and gloo can abort a process while the other runs a collective)."""
    for rank in (0, 1):
        assert json.loads((launched / f"after-run-{rank}.json").read_text()) == {
            "group_alive": False
        }


def test_the_ranks_share_one_global_priority_draw_without_overlap(launched, tiny_llama_dir):
    """Step s of one process with batch 4 trains draws [4s, 4s+4) of the global sample; on two
    processes with batch 2, rank 0 gets [4s, 4s+2) and rank 1 gets [4s+2, 4s+4)."""
    single = sampler_trainer(tiny_llama_dir, launched / "sampler-single", 4)
    global_steps = draws_per_step(single)
    rank0, rank1 = (
        json.loads((launched / f"worker-{rank}.json").read_text())["draws"] for rank in (0, 1)
    )

    assert len(global_steps) == len(rank0) == len(rank1) == 3
    for step, draws in enumerate(global_steps):
        assert rank0[step] + rank1[step] == draws


def test_token_budget_batches_are_dealt_to_the_ranks_in_turn(launched, tiny_llama_dir):
    """One process with 2 accumulation steps trains the global batch sequence b0 b1 b2 ...; two
    processes take b0, b2, ... and b1, b3, ..., so each step trains the same examples."""
    single = sampler_trainer(tiny_llama_dir, launched / "budget-single", 2, BUDGET, 2)
    global_batches = draws_per_step(single)
    rank0, rank1 = (
        json.loads((launched / f"worker-{rank}.json").read_text())["budget_draws"]
        for rank in (0, 1)
    )

    assert len(global_batches) == 6 and len(rank0) == len(rank1) == 3
    assert rank0 == global_batches[0::2] and rank1 == global_batches[1::2]
    assert len({len(batch) for batch in global_batches}) > 1, "the budget varies batch sizes"


def test_validation_decodes_every_prompt_once_and_matches_one_process(launched, tiny_llama_dir):
    single = sampler_trainer(tiny_llama_dir, launched / "sampler-single-eval", 4)
    expected = single.evaluate()
    got = json.loads((launched / "worker-0.json").read_text())["eval"]

    for key in ("eval_reward", "eval_distinct_2", "eval_length"):
        assert got[key] == pytest.approx(expected[key])
    per_process = [
        Counter(p for p, _ in pairs if p in EVAL_PROMPTS)
        for pairs in scored_by_process(launched).values()
    ]
    assert all(per_process), "each process decodes its share"
    assert sum(per_process, Counter()) == Counter(dict.fromkeys(EVAL_PROMPTS, 1))


def test_the_precompute_scores_every_training_pair_exactly_once(launched):
    scored = scored_by_process(launched)
    train = {(r["prompt"], r["response"]) for r in train_rows()}
    per_process = [Counter(pair for pair in pairs if pair in train) for pairs in scored.values()]

    assert all(per_process), "each process scores its share"
    assert sum(per_process, Counter()) == Counter(dict.fromkeys(train, 1))


def test_the_gathered_advantage_table_equals_a_one_process_precompute(launched, tiny_llama_dir):
    config = yaml.safe_load((launched / "config.yaml").read_text())
    records = load_records(config["train_data"]).records
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    expected = compute_advantages(
        model,
        tokenizer,
        records,
        AdvantageConfig(max_prompt_length=24, max_response_length=10, show_progress=False),
        value_head=load_value_head(launched / "run" / "value"),
        reward=load_reward(config["reward"]),
    )

    table = AdvantageTable.load(next((launched / "run/advantage").glob("advantages-*.safetensors")))

    assert len(table) == len(records)
    for name in ("reward", "value", "advantage", "ref_logp", "ref_token_logps"):
        np.testing.assert_allclose(getattr(table, name), getattr(expected, name), atol=1e-5)


def test_value_and_eval_decode_and_score_every_prompt_once_per_model(launched):
    run = launched / "run"
    val_prompts = [f"What about {t}?" for t in TOPICS[:5]]
    value_samples = [json.loads(line) for line in (run / "value/value_samples.jsonl").open()]
    assert [s["prompt"] for s in value_samples] == val_prompts
    for model in ("reference", "a_lol"):
        samples = [json.loads(line) for line in (run / "eval" / model / "samples.jsonl").open()]
        assert [s["prompt"] for s in samples] == TEST_PROMPTS
    scored = Counter(p for pairs in scored_by_process(launched).values() for p, _ in pairs)
    probes = json.loads((run / "value/reward_probes.json").read_text())["probes"]
    once = 1 + len(probes)  # π_ref's answer, and every stock answer the value stage checks
    assert {p: scored[p] for p in val_prompts} == dict.fromkeys(val_prompts, once)
    constants = json.loads((run / "eval" / "audit.json").read_text())["constants"]
    per_prompt = 2 + len(constants)  # each model's answer, and every constant answer
    assert {p: scored[p] for p in TEST_PROMPTS} == dict.fromkeys(TEST_PROMPTS, per_prompt)


def test_two_processes_train_the_same_weights_as_one_with_the_same_global_batch(launched):
    """DDP averages the two half-batch gradients, which is the one-process batch-4 gradient.

    A process that skipped the gradient all-reduce would train on its half alone."""
    single = launched / "single"
    shutil.copytree(launched / "run" / "value", single / "value")
    shutil.copytree(launched / "run" / "advantage", single / "advantage")
    config = str(launched / "config.yaml")

    assert main(["train", config, "--run-dir", str(single), "--batch-size", "4"]) == 0

    two = load_file(launched / "run/train/a_lol/final/model.safetensors")
    one = load_file(single / "train/a_lol/final/model.safetensors")
    assert two.keys() == one.keys()
    for name in two:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5)
    reference = load_file(
        Path(yaml.safe_load(Path(config).read_text())["reference"]) / "model.safetensors"
    )
    assert any(not torch.equal(two[n], reference[n]) for n in two), "training changed the weights"


def test_checkpoints_written_by_two_processes_are_complete(launched):
    checkpoints = launched / "run/train/a_lol/checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    for checkpoint in checkpoints.iterdir():
        names = {p.name for p in checkpoint.iterdir()}
        assert {"model.safetensors", "optimizer.pt", "trainer_state.json"} <= names
        assert {"rng_state_0.pth", "rng_state_1.pth"} <= names


def test_fsdp2_sharded_parameters_meet_the_logprob_helper_through_the_wrapper(tiny_llama_dir):
    """Outside the wrapper's forward the parameters are still sharded (the helper would fail);
    `call_through_wrapper` runs it inside, where FSDP has gathered them."""
    torchrun("fsdp", str(tiny_llama_dir))


def test_the_example_configs_load(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    examples = Path(__file__).parents[1] / "examples"
    config = load_config(str(examples / "hh_a_lol.yaml"), {})
    assert config.objectives == ["a_lol", "nll", "wbc"]
    kinds = {
        name: load_config_from_file(str(examples / "accelerate" / f"{name}.yaml")).distributed_type
        for name in ("ddp", "fsdp", "deepspeed_zero2")
    }
    assert {name: kind.value for name, kind in kinds.items()} == {
        "ddp": "MULTI_GPU",
        "fsdp": "FSDP",
        "deepspeed_zero2": "DEEPSPEED",
    }
