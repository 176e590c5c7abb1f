"""Image data: strict IDX files, named datasets (find, download, verify), image folders and
batching.

The names below load their module on first use (PEP 562), so that listing the datasets
(`vaelab datasets`) does not import torch, which batching and image folders need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_HOMES = {
    "vaelab.data.batches": ("BINARIZATIONS", "binarize", "binarize_fixed",
                            "default_binarization", "epoch_batches"),
    "vaelab.data.catalog": ("Checksum", "dataset_names", "describe_datasets", "download_file",
                            "load_dataset"),
    "vaelab.data.base": ("ImageData",),
    "vaelab.data.folder": ("FolderOptions", "is_folder_spec", "load_folder"),
    "vaelab.data.idx": ("read_idx", "read_idx_pair", "write_idx"),
}  # fmt: skip
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = [
    "BINARIZATIONS",
    "Checksum",
    "FolderOptions",
    "ImageData",
    "binarize",
    "binarize_fixed",
    "dataset_names",
    "default_binarization",
    "describe_datasets",
    "download_file",
    "epoch_batches",
    "is_folder_spec",
    "load_dataset",
    "load_folder",
    "read_idx",
    "read_idx_pair",
    "write_idx",
]


def __getattr__(name: str):
    if name not in _HOME_OF:
        raise AttributeError(f"module 'vaelab.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value  # found once; later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from vaelab.data.base import ImageData
    from vaelab.data.batches import (
        BINARIZATIONS,
        binarize,
        binarize_fixed,
        default_binarization,
        epoch_batches,
    )
    from vaelab.data.catalog import (
        Checksum,
        dataset_names,
        describe_datasets,
        download_file,
        load_dataset,
    )
    from vaelab.data.folder import FolderOptions, is_folder_spec, load_folder
    from vaelab.data.idx import read_idx, read_idx_pair, write_idx
