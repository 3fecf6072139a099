"""Everything built around the assignment's MAML, one concept per module.

`assignment.py` (MAML), `utils.py` (tasks, network, baseline, plot) and `test.py` are the
assignment's own files and stand alone; this package is what the project adds on top of them,
and depends on them, never the reverse:

    core         one meta-update, written once: pure functions of a learner's state (named tensors) and
                 its Algorithm (start, inner_step, query_loss, meta_gradient, meta_update): MAML's, Adam as
                 arithmetic, the finite guard; vmapped over learners, compiled
    meta_sgd     Meta-SGD: MAML that also learns a step size per parameter        } the MAML family: one
    anil         ANIL: MAML whose inner loop moves the last layer alone           } Algorithm subclass
    cavia        CAVIA: a context vector as extra inputs, adapted alone           } each, and one entry
    maml_plus_plus  MAML++: step sizes per layer and step, the multi-step loss    } of the registry
    reptile      Reptile: move towards where SGD on a task lands, no second order }
    learned      what the family learns beside an initialization: step sizes, contexts
    batched      N learners trained in lockstep on that core: many seeds for the price of a few
    streams      task streams, one per seed: the assignment's, the paper's, and one task per regressor
    learners     learners, protocols and studies as frozen records (the registry)
    training     LockstepRun (one compile rule, the one training loop, saves to resume from), seeds, the cache
    multitask    the paper's multi-task baselines: many one-task regressors, averaged
    checkpoints  lockstep learners saved to one file with the record of what they are and digests; mismatches
                 and damage refused; one run at a time writes in a checkpoint folder
    evaluation   held-out tasks, SGD on all of them at once, tuned step sizes, curvature, the summaries
    studies      a study run: every learner trained or loaded, tuned, scored, its curvature recorded
    processes    independent trainings side by side, one process each, on every core
    reports      the evaluation's figures and results.md tables, and each learner's label and colour
    pages        the docs pages' tables, written from the committed results into marked blocks of the pages
    curves       `python test.py --seeds N` and `--fast`
    files        figures, text and strict JSON, written whole or not at all (WriteError names a file that fails)
    cli          the scripts' shared conventions: counts, output folders, the device, Ctrl-C and exit status
    interrupts   Ctrl-C at the entry point: the first stops training after an update, a second ends the program
"""
