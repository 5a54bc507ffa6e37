#!/usr/bin/env bash
# Fetch into .whl/ (git-ignored) the wheels the device machine lacks for the TRL DPO row of
# bench/throughput/; bench/device_suite.sh installs them there. Run it here, where pip can
# download, from anywhere in the repository:
#
#     bash bench/device_wheels.sh        # 1.7 MiB: trl, datasets, dill, multiprocess
#     bash bench/device_wheels.sh checks # and what bench/device_checks.sh needs
#
# The device (python3 3.12, torch 2.11+cu130, transformers 5.17) already has what else they
# need (Requires-Dist, checked with `unzip -p .whl/NAME-*.whl '*/METADATA' | grep ^Requires-Dist`):
# accelerate, huggingface-hub, jinja2, numpy, packaging, pandas, psutil, pyyaml (trl); filelock,
# fsspec, httpx, pyarrow, requests, tqdm, xxhash (datasets). Missing there, so fetched here:
#   trl 1.16.0            the benchmark's reference; needs datasets>=4.7.0
#   datasets 4.8.5        the newest 4.x; needs dill<0.4.2, multiprocess<0.70.20
#   dill 0.4.1            datasets' pickler
#   multiprocess 0.70.19  datasets' process pool; needs dill>=0.4.1 (a py312 wheel)
# Never pyarrow: a carried pyarrow 26 wheel broke datasets on the device (PicklingError on
# MonthDayNano, bench/NOTES.md); the device's own pyarrow is used. No datasets release that trl
# 1.16 accepts (>= 4.7.0) imports with pyarrow < 19 (it builds `pa.json_()` at import; its
# metadata asks for >= 21), so device_suite.sh logs the device's pyarrow version first.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel)"

WHEELS=(trl==1.16.0 datasets==4.8.5 dill==0.4.1 multiprocess==0.70.19)
# With `checks`, also what bench/device_checks.sh needs (~47 MiB): bitsandbytes for QLoRA,
# liger-kernel for the fused response head, DeepSpeed (a wheel built here without its CUDA
# ops, as pip builds it from source with DS_BUILD_OPS=0) and its packages the device lacks.
if [[ ${1:-} == checks ]]; then
    WHEELS+=(bitsandbytes==0.50.2 liger-kernel==0.8.5 hjson==3.1.0 pydantic==2.13.4
        pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2)
fi

mkdir -p .whl
for wheel in "${WHEELS[@]}"; do
    rm -f ".whl/${wheel%%==*}-"*.whl  # one version of each, or the device's install stops
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "$wheel"
done

if [[ ${1:-} == checks ]]; then
    rm -f .whl/deepspeed-*.whl
    DS_BUILD_OPS=0 python3 -m pip wheel --no-deps --no-build-isolation -w .whl deepspeed==0.19.8
fi

for file in .whl/*.whl; do
    echo "== $file"
    unzip -p "$file" '*/METADATA' | grep '^Requires-Dist' | grep -v 'extra ==' || true
done
# The set must install for the device's Python (no duplicates, py312 tags) as the suite does.
python3 -m pip install --dry-run --quiet --no-index --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --target "$(mktemp -d)" .whl/*.whl
du -sh .whl
