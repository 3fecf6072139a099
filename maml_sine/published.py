"""Published numbers this project sets its results beside, as the papers print them."""

# Finn et al. (2017), Appendix C.1, Table 2: 5-shot MSE after 1, 5 and 10 SGD steps (arXiv:1703.03400v3).
PAPER_TABLE_2 = {
    "MAML": (0.67, 0.38, 0.35),
    "pretrain on all tasks": (2.41, 2.23, 2.19),
    "multi-task, no reg": (4.19, 3.85, 3.69),
    "multi-task, l2 reg": (7.18, 5.69, 5.60),
    "multi-task, reg to mean θ": (2.91, 2.72, 2.71),
}

TABLE_2_ROWS = (  # each row of the paper's Table 2 and the learners set beside it
    ("MAML", ("maml", "maml_alpha0.001", "maml_alpha0.001_code_init", "maml_tested_at_0.005", "maml_tested_at_0.001")),
    ("pretrain on all tasks", ("pretrained_tuned", "pretrained", "pretrained_alpha0.001")),
    ("multi-task, no reg", ("multitask", "multitask_independent")),
    ("multi-task, l2 reg", ("multitask_l2", "multitask_l2_wd0.01", "multitask_l2_independent")),
    ("multi-task, reg to mean θ",
     ("multitask_running_mean", "multitask_running_mean_wd0.01", "multitask_running_mean_independent")),
)  # fmt: skip
TABLE_2_STEPS = (1, 5, 10)  # the SGD steps of its columns

# Li et al. (2017), Table 1, the row trained at 5 shots, one step, tested at 5 / 10 / 20 shots: mean MSE and its
# 95% interval over their test tasks (as the paper gives them).
LI_TABLE_1 = {"maml": ((1.13, 0.85, 0.71), (0.18, 0.14, 0.12)), "meta_sgd": ((0.90, 0.63, 0.50), (0.16, 0.12, 0.10))}
