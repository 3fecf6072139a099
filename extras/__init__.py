"""Reusable pieces of the held-out evaluation in `scripts/evaluate.py`, one concept per module:
`atomic` writes a file so that an interrupted write never leaves it half-written; `checkpoint`
saves a `MAML` learner and rebuilds it exactly, refusing damaged or foreign files; `heldout`
draws a fixed set of new sine tasks from a private generator, leaving `np.random` alone;
`adaptation` runs plain SGD from one initialization on many tasks at once with `torch.func`;
and `statistics` summarises per-task errors as a mean and a 95% confidence interval.
"""
