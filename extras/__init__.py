"""Reusable pieces of the held-out evaluation in `scripts/evaluate.py`, one concept per module:
`checkpoint` saves a `MAML` learner (atomically, with `utils.write_atomically`) and rebuilds it
exactly, refusing damaged or foreign files; `heldout` draws a fixed set of new sine tasks from a
private generator, leaving `np.random` alone; `adaptation` runs plain SGD from one initialization
on many tasks at once with `torch.func`; and `statistics` summarises per-task errors as a mean
and a 95% confidence interval.
"""
