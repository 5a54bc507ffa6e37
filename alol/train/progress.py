"""The training progress bar: one bar per run, its figures on the bar itself.

transformers' ProgressCallback writes every log as a dict of strings between the bar's
redraws; the logs already go to metrics.jsonl and the configured sinks, so here the bar only
carries the latest loss (and validation reward) as its postfix.
"""

from __future__ import annotations

from transformers.trainer_callback import ProgressCallback

SHOWN = {"loss": "loss", "eval_reward": "eval reward", "grad_norm": "grad norm"}


class QuietProgressCallback(ProgressCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        shown = {label: f"{logs[name]:.4g}" for name, label in SHOWN.items() if name in logs}
        if shown:
            self.training_bar.set_postfix(shown, refresh=False)
