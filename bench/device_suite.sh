#!/usr/bin/env bash
# The GPU measurements of issue 5 in one device call: the 1.1B throughput run (a_lol, nll, dpo,
# the eager precompute cases, 640/128 rows, TRL's DPO when it imports, then the precompute with
# compiled layers) and the levers on the A-LoL step (token budgets, compiled layers, bf16
# weights + micro-batch x2), written to bench/results/throughput{,_levers}_cuda.{json,md} and
# copied into $OUT with the log.
#
# The call, from a checkout where `bash bench/device_wheels.sh` has filled .whl/ (trl, datasets):
#
#     run(command="bash bench/device_suite.sh", carry=[".whl"], timeout_s=600)
#
# then copy the files it returns (files_at) into bench/results/ and read suite.log. Dry run on a
# CPU (every command runs; results go to a temporary folder, bench/results is left alone):
#
#     DEVICE=cpu MODEL=tiny STEPS=1 bash bench/device_suite.sh
#
# Each part runs under its own `timeout`, inside one deadline (DEADLINE_S after the start), so
# a slow part cannot eat the call; a run cut short keeps the JSON it saved after every case,
# and its Markdown is rebuilt from that JSON (`--from-json`). Settings, by environment:
#   DEVICE (cuda), MODEL (1b), STEPS (the script's default: 12 on CUDA), DEADLINE_S (560),
#   RESULTS (bench/results on CUDA, a temporary folder otherwise), OUT (a temporary folder
#   when unset).
set -uo pipefail
cd "$(dirname "$0")/.."

MODEL=${MODEL:-1b}
source bench/device_common.sh
THROUGHPUT=$RESULTS/throughput_$SUFFIX.json
LEVERS=$RESULTS/throughput_levers_$SUFFIX.json
COMMON=(--device "$DEVICE" --model "$MODEL" ${STEPS:+--steps "$STEPS"})
TRL_BAR=()  # TRL's rate measured earlier on the H100, used (labelled so) when TRL cannot run
if [[ $DEVICE == cuda* ]]; then TRL_BAR=(--trl-bar-tokens-per-s 22500); fi

versions() {
    echo "== versions ($(date -u +%FT%TZ))"
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv ||
        echo "no nvidia-smi"
    print_versions torch transformers accelerate pyarrow datasets trl dill
}

# trl, datasets, dill and multiprocess from .whl/ (bench/device_wheels.sh) into /tmp/site.
install_wheels() {
    echo "== wheels from .whl/"
    if ! compgen -G ".whl/*.whl" >/dev/null; then
        echo "none carried: no TRL row unless trl is installed"
        return
    fi
    if timeout 60 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl; then
        export PYTHONPATH=$PYTHONPATH:/tmp/site
        python3 -c "import trl, datasets; print('trl', trl.__version__, 'datasets', datasets.__version__)" ||
            echo "trl does not import: the throughput run goes on without its TRL row"
    else
        echo "the wheels did not install: the throughput run goes on without TRL"
    fi
}

# $1: the JSON a run saves after each case; its Markdown is rebuilt when the run was cut short.
finish_markdown() {
    if [[ -f $1 && (! -f ${1%.json}.md || $1 -nt ${1%.json}.md) ]]; then
        echo "rebuilding ${1%.json}.md from the saved JSON"
        timeout 60 python -m bench.throughput --from-json "$1" --out "$1" >/dev/null
    fi
}

# The compiled precompute runs last (HH lengths, then 640/128, on one compile): a cold compile of
# the 1.1B layers is predicted at 60-120 s, so it starts only if ~130 s of the cap are left, and
# a cut run keeps every eager row.
throughput() {
    local limit
    limit=$(cap 330 200)
    echo "== throughput (${limit} s): TRL first, then hf_nll nll a_lol dpo, the eager precompute" \
        "cases, 640/128 rows, and the precompute with compiled layers"
    rm -f "$THROUGHPUT" "${THROUGHPUT%.json}.md"
    timeout "$limit" python -m bench.throughput "${COMMON[@]}" --out "$THROUGHPUT" \
        --methods hf_nll nll a_lol dpo precompute precompute_unshared precompute_full_logits \
        precompute_compiled --compile-after-s $((limit - 130)) \
        --trl-timeout-s 120 "${TRL_BAR[@]}"
    echo "throughput exit status $?"
    finish_markdown "$THROUGHPUT"
}

# Compiled levers run last, in LEVERS' order (compiled + budget, bf16 + compiled + budget,
# compiled alone, ...), none starting later than ~100 s before the cap (compile, then time it).
levers() {
    local limit
    limit=$(cap 600 15)
    echo "== levers on the a_lol step (${limit} s)"
    rm -f "$LEVERS" "${LEVERS%.json}.md"
    timeout "$limit" python -m bench.throughput "${COMMON[@]}" --out "$LEVERS" --cases levers \
        --levers "masked decoder" "token budget" "compiled layers" \
        "bf16 weights, micro-batch x2" "bf16 weights, token budget" \
        "bf16 weights, compiled layers" "pad to" \
        --lever-budget-s $((limit - 30)) --compile-after-s $((limit - 100))
    echo "levers exit status $?"
    finish_markdown "$LEVERS"
}

copy_results() {
    echo "== results -> \$OUT ($(seconds_left) s left)"
    for file in "$THROUGHPUT" "${THROUGHPUT%.json}.md" "$LEVERS" "${LEVERS%.json}.md"; do
        if [[ -f $file ]]; then cp "$file" "$OUT/"; fi
    done
    ls -l "$OUT"
}

main() {
    versions
    install_wheels
    throughput
    levers
    copy_results
}

main 2>&1 | tee "$OUT/suite.log"
