"""Data layer: reading images and masks, datasets (manifest or class folders), folder listings."""
from .datasets import (
    Dataset,
    DatasetError,
    FolderListing,
    MaskFinder,
    Sample,
    is_mask_path,
    list_images,
    load_dataset,
    read_manifest,
    sort_key,
)
from .images import IMAGE_EXTENSIONS, ImageReadError, LoadedImage, decode_image, is_image_file, read_image, read_mask

__all__ = [
    "Dataset",
    "DatasetError",
    "FolderListing",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "LoadedImage",
    "MaskFinder",
    "Sample",
    "decode_image",
    "is_image_file",
    "is_mask_path",
    "list_images",
    "load_dataset",
    "read_image",
    "read_manifest",
    "read_mask",
    "sort_key",
]
