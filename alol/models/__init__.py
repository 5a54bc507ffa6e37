"""Running a model: response log-probs, the reference pass and the precompute, decoding, the
value head's fit and files, compilation, 4-bit bases, and the checks a model folder passes."""
