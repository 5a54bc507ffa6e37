"""Data: the record kinds, the files they load from, their conversions, tokenization, batches
and the examples each objective family trains on, and the precompute's per-example table."""
