#!/usr/bin/env bash
# The GPU checks of the levers built after bench/device_suite.sh (issue 15), in one device call,
# to run after that suite's own call:
#   1. the packing, QLoRA and DeepSpeed tests on CUDA (flex attention's packed pass, the 4-bit
#      base on bitsandbytes' CUDA kernels, ZeRO-2 through the shipped accelerate config);
#   2. the packing levers on the 1.1B A-LoL step (block-causal SDPA and flex attention, fixed
#      and token-budget batches) -> bench/results/throughput_packing_cuda.{json,md};
#   3. the response heads, Liger-Kernel's fused linear cross-entropy beside alol's own
#      -> bench/results/logprobs_cuda.{json,md};
#   4. QLoRA on a random-init 1.1B Llama: weights' memory, step time and log-prob error against
#      bf16 -> bench/results/qlora_cuda.{json,md} (the error on trained weights is measured on
#      the CPU with SmolLM2: bench/results/qlora_cpu.md);
#   5. the whole pipeline under DeepSpeed ZeRO-2 on one GPU
#      -> bench/results/distributed_smoke_deepspeed_zero2_cuda.json.
#
# The call, after `bash bench/device_wheels.sh checks` has filled .whl/ (~49 MiB):
#
#     run(command="bash bench/device_checks.sh", carry=[".whl"], timeout_s=600)
#
# then copy the files it returns into bench/results/ and read checks.log. Dry run on a CPU
# (every part runs where a CPU can; results go to a temporary folder):
#
#     DEVICE=cpu MODEL=tiny STEPS=1 bash bench/device_checks.sh
#
# Each part runs under its own `timeout` inside one deadline (DEADLINE_S, 560 s), so a slow
# part cannot eat the call. Settings, by environment: DEVICE (cuda), MODEL (1b), QLORA_MODEL
# (1b), STEPS (the throughput script's default), DEADLINE_S, RESULTS (bench/results on CUDA, a
# temporary folder otherwise), OUT (a temporary folder when unset).
set -uo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-1b}
QLORA_MODEL=${QLORA_MODEL:-1b}
source bench/device_common.sh

install_wheels() {
    echo "== wheels from .whl/"
    if ! compgen -G ".whl/*.whl" >/dev/null; then
        echo "none carried: the QLoRA, Liger and DeepSpeed parts skip what needs them"
        return
    fi
    timeout 90 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=$PYTHONPATH:/tmp/site
    print_versions torch transformers peft accelerate bitsandbytes liger-kernel deepspeed
}

tests() {
    local limit
    limit=$(cap 150 330)
    echo "== tests on $DEVICE ($limit s)"
    has_time "$limit" || return
    timeout "$limit" python3 -m pytest -q -p no:cacheprovider -rs \
        tests/test_packing.py tests/test_qlora.py tests/test_deepspeed.py
    echo "tests exit status $?"
}

packing_levers() {
    local limit
    limit=$(cap 150 180)
    echo "== packing levers on the a_lol step ($limit s)"
    has_time "$limit" || return
    timeout "$limit" python -m bench.throughput --device "$DEVICE" --model "$MODEL" \
        ${STEPS:+--steps "$STEPS"} --cases levers --levers "packing" \
        --lever-budget-s $((limit - 20)) --out "$RESULTS/throughput_packing_$SUFFIX.json"
    echo "packing levers exit status $?"
}

response_heads() {
    local limit
    limit=$(cap 60 120)
    echo "== response heads ($limit s)"
    has_time "$limit" || return
    timeout "$limit" python3 -m bench.logprobs --device "$DEVICE" \
        --out "$RESULTS/logprobs_$SUFFIX.json"
    echo "response heads exit status $?"
}

qlora() {
    local limit
    limit=$(cap 90 40)
    echo "== QLoRA on a random-init $QLORA_MODEL ($limit s)"
    has_time "$limit" || return
    if [[ $DEVICE != cuda* ]]; then
        # bitsandbytes' CPU kernel asserts "N must be divisible by block_n" on the random
        # shapes; on a CPU, `python -m bench.qlora` (SmolLM2) is the measurement.
        echo "skipped on $DEVICE: bench.qlora without --random-model measures QLoRA on a CPU"
        return
    fi
    timeout "$limit" python3 -m bench.qlora --device "$DEVICE" \
        --random-model "$QLORA_MODEL" --out "$RESULTS"
    echo "qlora exit status $?"
}

deepspeed_pipeline() {
    local limit
    limit=$(cap 90 10)
    echo "== the pipeline under DeepSpeed ZeRO-2 ($limit s)"
    has_time "$limit" || return
    timeout "$limit" python3 -m bench.distributed_smoke --config deepspeed_zero2 \
        --num-processes 1 --bf16 --out "$RESULTS"
    echo "deepspeed exit status $?"
}

copy_results() {
    echo "== results -> \$OUT ($(seconds_left) s left)"
    for file in "$RESULTS"/throughput_packing_"$SUFFIX".* "$RESULTS"/logprobs_"$SUFFIX".* \
        "$RESULTS"/qlora_"$SUFFIX".* "$RESULTS"/distributed_smoke_deepspeed_zero2_"$SUFFIX".json; do
        if [[ -f $file ]]; then cp "$file" "$OUT/"; fi
    done
    ls -l "$OUT"
}

main() {
    install_wheels
    tests
    packing_levers
    response_heads
    qlora
    deepspeed_pipeline
    copy_results
}

main 2>&1 | tee "$OUT/checks.log"
