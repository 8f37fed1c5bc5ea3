"""Hub distribution: export a trained model to a weights folder, register, check and publish it."""
from .card import BIBTEX, PAPER_RESULTS, eval_sets, load_metrics, parse_front_matter, render_card
from .export import check_weights_folder, count_params, export, num_modes_of, publish, register
from .table import model_table, update_readme_table

__all__ = [
    'export', 'register', 'check_weights_folder', 'publish', 'count_params', 'num_modes_of',
    'model_table', 'update_readme_table', 'render_card', 'load_metrics', 'eval_sets', 'parse_front_matter',
    'PAPER_RESULTS', 'BIBTEX',
]
