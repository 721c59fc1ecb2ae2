"""A NequIP datamodule that applies extra transforms to the training split only."""

import contextlib
from typing import Dict, List, Optional, Union

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

from nequip.data.datamodule import NequIPDataModule

from .checks import check_frames


class _Switch:
    """A picklable on/off flag shared by the datamodule and its wrapped datasets."""

    def __init__(self) -> None:
        self.on = True


class _TrainTransformedDataset(torch.utils.data.Dataset):
    """Wraps a host dataset and applies ``transforms`` after the dataset's own ones."""

    def __init__(self, dataset, transforms, switch: _Switch) -> None:
        self.dataset = dataset
        self.transforms = transforms
        self._switch = switch

    def __len__(self):
        return len(self.dataset)

    def _apply(self, item):
        if self._switch.on:
            for t in self.transforms:
                item = t(item)
        return item

    def __getitem__(self, index):
        item = self.dataset[index]
        if isinstance(item, list):
            return [self._apply(x) for x in item]
        return self._apply(item)

    def __getitems__(self, indices):
        return [self._apply(x) for x in self.dataset.__getitems__(indices)]

    def __getattr__(self, name):
        # e.g. `num_atoms` for the host's samplers
        if name in ("dataset", "transforms", "_switch"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


class TrainAugmentedDataModule(NequIPDataModule):
    """:class:`~nequip.data.datamodule.NequIPDataModule` plus ``train_transforms``.

    ``train_transforms`` (a list of transform configs, e.g.
    :class:`~nequip_flash_ace.data.RandomRotation`) are applied to the items of the
    training split only — also when the split comes from ``split_dataset`` — and
    after each dataset's own ``transforms``. Validation, test and predict data are
    never touched, and neither are the training-set statistics
    (``training_data_stats``), which are computed on the unaugmented data.

    Before a stage uses its data, every frame held in memory is checked
    (:func:`~nequip_flash_ace.data.checks.check_frames`): a non-finite or misshapen label
    or an unknown species stops with the file and frame named.

    All other arguments are the host's.
    """

    def __init__(
        self,
        seed: int,
        train_transforms: Optional[Union[List, ListConfig]] = None,
        **kwargs,
    ) -> None:
        super().__init__(seed=seed, **kwargs)
        if isinstance(train_transforms, (DictConfig, ListConfig)):
            train_transforms = OmegaConf.to_container(train_transforms, resolve=True)
        self.train_transforms_config: List[Dict] = list(train_transforms or [])
        self._augment = _Switch()

    @contextlib.contextmanager
    def _unaugmented(self):
        previous, self._augment.on = self._augment.on, False
        try:
            yield
        finally:
            self._augment.on = previous

    def setup(self, stage: str) -> None:
        super().setup(stage)
        # every labelled frame of this stage is checked before it is used
        # (the host builds a stage's datasets in setup and deletes them in teardown)
        for split in ("train", "val", "test"):
            for dataset in getattr(self, f"{split}_dataset", None) or []:
                check_frames(dataset, split)
        if stage == "fit" and self.train_transforms_config:
            transforms = [instantiate(cfg) for cfg in self.train_transforms_config]
            self.train_dataset = [
                _TrainTransformedDataset(ds, transforms, self._augment)
                for ds in self.train_dataset
            ]

    def get_statistics(self, dataset: str = "train", dataset_idx: int = 0):
        with self._unaugmented():
            return super().get_statistics(dataset=dataset, dataset_idx=dataset_idx)
