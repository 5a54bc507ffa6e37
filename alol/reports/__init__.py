"""What alol reports: evaluation reports and the comparison table, the reward-hacking audit,
the advantage audit, metrics of texts and fits, and plots."""
