"""Reusable pieces of the held-out evaluation in `scripts/evaluate.py`, one concept per module:
`atomic` writes a file so that an interrupted write never leaves it half-written, and
`checkpoint` saves a `MAML` learner and rebuilds it exactly, refusing damaged or foreign files.
"""
