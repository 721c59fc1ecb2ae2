"""Data transforms and datamodules of Flash-ACE."""

from .rotation import RandomRotation, haar_random_rotation, rotate
from .datamodule import TrainAugmentedDataModule
from .checks import TrainingDataWarning, check_frames
from .statistics import FlashACEDataStatisticsManager, PerTypeEnergyLeastSquares

__all__ = [
    "RandomRotation",
    "haar_random_rotation",
    "rotate",
    "TrainAugmentedDataModule",
    "FlashACEDataStatisticsManager",
    "PerTypeEnergyLeastSquares",
    "TrainingDataWarning",
    "check_frames",
]
