from .coop import (DATASETS, ELEVEN, FOLDER, SPECS, VARIANTS, ClassificationData, DatasetLayoutError, DatasetSpec,
                   load_dataset)
from .fewshot_cache import FewshotCacheError, fewshot_splits
from .folder import (ClassificationDataset, SplitItem, classnames_of, fewshot, read_split, read_split_file,
                     subsample_classes, test_transform, train_transform)

__all__ = ["ClassificationData", "ClassificationDataset", "DATASETS", "DatasetLayoutError", "DatasetSpec", "ELEVEN",
           "FOLDER", "FewshotCacheError", "SPECS", "SplitItem", "VARIANTS", "classnames_of", "fewshot",
           "fewshot_splits", "load_dataset", "read_split", "read_split_file", "subsample_classes", "test_transform",
           "train_transform"]
