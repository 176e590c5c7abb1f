"""Image data: strict IDX files, named datasets (find, download, verify), image folders and
batching."""

from vaelab.data.batches import (
    BINARIZATIONS,
    binarize,
    binarize_fixed,
    default_binarization,
    epoch_batches,
)
from vaelab.data.catalog import (
    Checksum,
    ImageData,
    dataset_names,
    describe_datasets,
    download_file,
    load_dataset,
)
from vaelab.data.folder import FolderOptions, is_folder_spec, load_folder
from vaelab.data.idx import read_idx, read_idx_pair, write_idx

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
