"""alol's benchmarks. Each is a module run from the repository root, `python -m bench.<name>`
(the throughput harness: `python -m bench.throughput`); each writes its figures, with the device
and versions, to bench/results/."""
