"""The optimizers' names as the report and the figures print them, and the Path-SGD family's pairs.

Shared by ``scripts/report.py`` and ``scripts/plot_figures.py``; plain Python, so neither needs torch to import it.
"""

NAMES = {  # optimizer config name -> display name
    "pathsgd": "Path-SGD", "sgd": "SGD", "adagrad": "AdaGrad",
    "pathsgd_momentum": "Path-SGD + momentum", "sgd_momentum": "SGD + momentum",
    "path_adagrad": "Path-AdaGrad", "path_adam": "Path-Adam", "adam": "Adam",
}
# Each Path variant with its base method: the family study's comparisons and the family figure's rows.
PAIRS = [("pathsgd", "sgd"), ("pathsgd_momentum", "sgd_momentum"), ("path_adagrad", "adagrad"), ("path_adam", "adam")]
