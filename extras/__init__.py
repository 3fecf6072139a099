"""Pieces built on top of the assignment, one concept per module. For `scripts/evaluate.py`:
`checkpoint` saves a `MAML` learner (atomically, with `utils.write_atomically`) and rebuilds it
exactly, refusing damaged or foreign files; `heldout` draws a fixed set of new sine tasks from a
private generator, leaving `np.random` alone; `adaptation` runs plain SGD from one initialization
on many tasks at once with `torch.func`; `statistics` summarises per-task errors as a mean
and a 95% confidence interval. `compiled` is the opt-in fast path of `python test.py --fast`:
`MAML.train` and `TrainFromScratch.train` as single `torch.compile`d functions, equal up to rounding.
"""
