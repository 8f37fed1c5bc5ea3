"""The README's model table, made from the registry and the manifest (never typed by hand)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

from ..weights import get_entry, published
from .card import dataset_label

__all__ = ['model_table', 'update_readme_table', 'TABLE_START', 'TABLE_END']

#: the README lines between which the table lives
TABLE_START, TABLE_END = '<!-- model-table -->', '<!-- /model-table -->'


def model_table(link_prefix: str = 'weights_cards', include_unpublished: bool = True) -> str:
    """Markdown table: one row per published weight (params, K, dataset, top-1 per eval set, card link),
    then, optionally, one row per architecture without published weights yet."""
    import timm
    from .. import models
    from .export import count_params, num_modes_of

    def params_k(arch: str) -> tuple:
        m = timm.create_model(arch)
        return count_params(m), num_modes_of(m)

    rows: List[str] = ['| model | params | K | dataset | top-1 (%) | card |', '|---|---|---|---|---|---|']
    done = set()
    for name in published():
        arch, tag = name.split('.', 1)
        if arch not in models.MODEL_NAMES:
            continue
        e = get_entry(name)
        if e is None:  # published() lists the manifest's names, so never
            continue
        top1 = '; '.join(f'{v["top1"]:.2f} ({k})' for k, v in e.metrics.items() if 'top1' in v) or '–'
        k: Optional[int] = e.extra.get('num_modes')
        rows.append(f'| `{name}` | {e.num_params:,} | {k or "–"} | {dataset_label(tag)} | {top1} | '
                    f'[card]({link_prefix}/{name}/README.md) |')
        done.add(arch)
    if include_unpublished:
        for arch in models.MODEL_NAMES:
            if arch not in done:
                n, k = params_k(arch)
                rows.append(f'| `{arch}` | {n:,} | {k or "–"} | – | no weights yet | – |')
    return '\n'.join(rows) + '\n'


def update_readme_table(path: Union[str, Path], link_prefix: str = 'weights_cards') -> bool:
    """Replace the table between ``TABLE_START`` and ``TABLE_END`` in ``path`` by ``model_table()``;
    the rest of the file is kept byte for byte. Returns whether the file changed."""
    path = Path(path)
    text = path.read_text(encoding='utf-8')
    start, end = text.find(TABLE_START + '\n'), text.find('\n' + TABLE_END)
    if start < 0 or end < start:
        raise ValueError(f'{path}: no model table to update (needs a line {TABLE_START} before a line {TABLE_END})')
    start += len(TABLE_START) + 1
    new = text[:start] + model_table(link_prefix=link_prefix).rstrip('\n') + text[end:]
    if new != text:
        path.write_text(new, encoding='utf-8')
    return new != text
