"""Everything built around the assignment's MAML, one concept per module.

`assignment.py` (MAML) and `utils.py` (tasks, network, baseline, plot) are the assignment's
own files and stand alone; this package is what the project adds on top of them:

    training     the seeded task stream of `python test.py`, meta-training with a progress bar, the final MSE
    functional   the network's loss and MAML's inner loop as pure functions, for torch.func
    compiled     the opt-in fast path: a whole meta-update as one torch.compile'd function
    batched      N learners trained in lockstep, B tasks per update: many seeds for the price of a few
    checkpoints  a MAML learner saved to one file and rebuilt exactly; damaged files refused
    evaluation   held-out tasks, batched SGD on all of them at once, means and confidence intervals
    paper        Finn et al.'s own protocol: 25 tasks per update, one model per K, the pretrained and oracle baselines
    reports      the evaluation's figures and markdown table
    files        atomic writes: a file is either whole or absent
    cli          the scripts' shared command-line conventions: counts, output paths, Ctrl-C
"""
