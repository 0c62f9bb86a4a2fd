from .folder import (ClassificationDataset, SplitItem, classnames_of, fewshot, read_split, subsample_classes,
                     test_transform, train_transform)

__all__ = ["ClassificationDataset", "SplitItem", "classnames_of", "fewshot", "read_split", "subsample_classes",
           "test_transform", "train_transform"]
