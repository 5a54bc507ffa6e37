"""The method, with no I/O: read it top to bottom in this order.

- `batches`: what the losses read (log-probs with the policy's gradient, the precomputed
  reference, rewards and advantages);
- `objectives`: every loss as a pure function, and the registry that names them (`kto`, `pro`:
  KTO's and PRO's losses);
- `leftover`: A = R − V(x), the leftover lunch (A > 0), its sampling weights and step budget;
- `sampling`: A-LoL's priority sampling (∝ A, with replacement) and KTO's whole blocks;
- `value_head`: V(x), the small head over π_ref's prompt states.
"""
