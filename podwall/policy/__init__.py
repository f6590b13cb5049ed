"""Policy: groups, rules and modes; validation, evaluation with explanations. Pure, no I/O."""
