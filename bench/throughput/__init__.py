"""The throughput harness: a training step of every objective beside a plain NLL step, the
reference precompute and TRL's DPO trainer on HH-shaped batches (`python -m bench.throughput`)."""
