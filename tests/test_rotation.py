"""Random-rotation augmentation: exact label rotation, Haar measure, train-only, workers."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from nequip.data import AtomicDataDict, from_ase
from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
from nequip_flash_ace.data import RandomRotation, TrainAugmentedDataModule, rotate

from helpers import build_model
from model_configs import ATTENTION_NU2

K = AtomicDataDict


def _emt_item(seed=0):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 1)
    atoms.symbols[[1, 5]] = "Au"  # a less symmetric cell
    atoms.rattle(0.1, seed=seed)
    atoms.set_cell(atoms.cell[:] @ np.array([[1.0, 0.05, 0.0], [0.0, 1.0, 0.08], [0.02, 0.0, 1.0]]), scale_atoms=True)
    return atoms, _labelled(atoms)


def _labelled(atoms):
    """``from_ase`` of ``atoms`` with fresh EMT energy, forces and stress."""
    atoms.calc = EMT()
    results = dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=atoms.get_stress())
    atoms.calc = SinglePointCalculator(atoms, **results)  # the host reads labels from single-point results
    return from_ase(atoms)


def test_labels_match_the_reference_calculator_on_the_rotated_structure():
    atoms, data = _emt_item()
    data = NeighborListTransform(r_max=4.0)(data)
    for inversion in (False, True):
        transform = RandomRotation(seed=7, inversion=inversion)
        for _ in range(4):
            rotated = transform(dict(data))
            g = transform.last_rotation.numpy()
            new_atoms = atoms.copy()
            new_atoms.set_cell(rotated[K.CELL_KEY].reshape(3, 3).numpy(), scale_atoms=False)
            new_atoms.set_positions(rotated[K.POSITIONS_KEY].numpy())
            ref = _labelled(new_atoms)
            assert np.allclose(rotated[K.POSITIONS_KEY].numpy(), atoms.positions @ g.T, atol=1e-12)
            assert abs(ref[K.TOTAL_ENERGY_KEY].item() - data[K.TOTAL_ENERGY_KEY].item()) < 1e-10
            assert rotated[K.TOTAL_ENERGY_KEY].item() == data[K.TOTAL_ENERGY_KEY].item()
            np.testing.assert_allclose(rotated[K.FORCE_KEY].numpy(), ref[K.FORCE_KEY].numpy(), atol=1e-10, rtol=0)
            np.testing.assert_allclose(rotated[K.STRESS_KEY].numpy(), ref[K.STRESS_KEY].numpy(), atol=1e-10, rtol=0)
            # periodic images are unchanged: same edges, same integer shifts
            assert torch.equal(rotated[K.EDGE_INDEX_KEY], data[K.EDGE_INDEX_KEY])
            assert torch.equal(rotated[K.EDGE_CELL_SHIFT_KEY], data[K.EDGE_CELL_SHIFT_KEY])
    # with inversion on, both signs of det(g) occur
    t = RandomRotation(seed=3, inversion=True)
    dets = {round(float(np.linalg.det(t.draw().numpy()))) for _ in range(50)}
    assert dets == {-1, 1}


def test_unknown_vector_field_is_an_error_not_a_silent_pass():
    _, data = _emt_item()
    data["my_vector"] = torch.randn(len(data[K.POSITIONS_KEY]), 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="`my_vector`"):
        RandomRotation(seed=0)(data)
    # declared fields are handled
    out = RandomRotation(seed=0, vector_fields=["my_vector"])(dict(data))
    assert not torch.allclose(out["my_vector"], data["my_vector"])
    out = RandomRotation(seed=0, invariant_fields=["my_vector"])(dict(data))
    assert torch.equal(out["my_vector"], data["my_vector"])


def test_registered_cartesian_tensor_field_rotates_exactly():
    """A rank-2 non-symmetric field (Born charges, 'ij') rotates as g Z g^T."""
    _, data = _emt_item()
    n = len(data[K.POSITIONS_KEY])
    z = torch.randn(n, 3, 3, dtype=torch.float64)
    data[K.BORN_CHARGE_KEY] = z
    g = torch.tensor(RandomRotation(seed=1).draw())
    out = rotate(data, g)
    torch.testing.assert_close(out[K.BORN_CHARGE_KEY], g @ z @ g.T, atol=1e-13, rtol=0)


def test_haar_measure_of_rotation_angles():
    """θ of a Haar-random rotation has density (1 - cos θ)/π on [0, π]: KS test."""
    from scipy import stats

    t = RandomRotation(seed=2024)
    angles = []
    for _ in range(4000):
        g = t.draw().numpy()
        angles.append(np.arccos(np.clip((np.trace(g) - 1) / 2, -1, 1)))
    cdf = lambda x: (x - np.sin(x)) / np.pi  # noqa: E731
    result = stats.kstest(angles, cdf)
    assert result.pvalue > 0.01, result
    # a uniform-angle sampler would fail the same test: the test has power
    rng = np.random.default_rng(0)
    assert stats.kstest(rng.uniform(0, np.pi, 4000), cdf).pvalue < 1e-6


def test_reproducible_sequence_and_distinct_items():
    a, b = RandomRotation(seed=5), RandomRotation(seed=5)
    seq_a = [a.draw() for _ in range(5)]
    seq_b = [b.draw() for _ in range(5)]
    for x, y in zip(seq_a, seq_b):
        assert torch.equal(x, y)
    for i in range(5):
        for j in range(i):
            assert not torch.allclose(seq_a[i], seq_a[j])
    assert not torch.allclose(RandomRotation(seed=6).draw(), seq_a[0])


def test_equivariant_model_loss_is_unchanged_by_augmentation():
    """Flash-ACE is exactly equivariant, so the host's training loss on an augmented
    batch equals the loss on the original batch (float64)."""
    from nequip.train.metrics_manager import EnergyForceStressLoss

    model = build_model(dict(ATTENTION_NU2, type_names=["Cu", "Au"], per_type_energy_shifts={"Cu": -1.0, "Au": -2.0},
                             per_type_energy_scales={"Cu": 1.0, "Au": 1.0}), "float64")
    tm = ChemicalSpeciesToAtomTypeMapper(model_type_names=["Cu", "Au"], chemical_species_to_atom_type_map={"Cu": "Cu", "Au": "Au"})
    items = [NeighborListTransform(r_max=4.0)(tm(_emt_item(seed)[1])) for seed in range(3)]
    transform = RandomRotation(seed=11, inversion=True)
    augmented = [transform(dict(x)) for x in items]

    def loss(batch_items):
        batch = AtomicDataDict.batched_from_list(batch_items)
        pred = model(dict(batch))
        loss_fn = EnergyForceStressLoss()
        out = loss_fn(pred, batch)
        return out["weighted_sum"].item(), pred

    l_orig, _ = loss(items)
    l_aug, _ = loss(augmented)
    assert l_orig > 1e-6
    assert abs(l_orig - l_aug) < 1e-10 * max(1.0, abs(l_orig)), (l_orig, l_aug)


def _write_emt_xyz(path, n_frames=12):
    frames = []
    for seed in range(n_frames):
        atoms, _ = _emt_item(seed)
        frames.append(atoms)
    write(path, frames, format="extxyz")


def _datamodule(xyz, enabled=True, num_workers=0, batch_size=1):
    dataset = {
        "_target_": "nequip.data.dataset.ASEDataset",
        "file_path": str(xyz),
        "transforms": [
            {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper", "model_type_names": ["Cu", "Au"],
             "chemical_species_to_atom_type_map": {"Cu": "Cu", "Au": "Au"}},
            {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": 4.0},
        ],
    }
    loader = {"_target_": "torch.utils.data.DataLoader", "batch_size": batch_size, "num_workers": num_workers}
    return TrainAugmentedDataModule(
        seed=3,
        split_dataset={"dataset": dataset, "train": 6, "val": 3, "test": 3},
        train_dataloader=loader,
        val_dataloader=loader,
        test_dataloader=loader,
        train_transforms=[{"_target_": "nequip_flash_ace.data.RandomRotation", "seed": 3, "enabled": enabled}],
    )


def _pairwise_distances(pos):
    return torch.cdist(pos, pos)


def test_only_the_training_split_is_rotated(tmp_path):
    xyz = tmp_path / "emt.xyz"
    _write_emt_xyz(xyz)
    dm = _datamodule(xyz)
    dm.setup("fit")
    base_train = dm.train_dataset[0].dataset
    for i in range(len(base_train)):
        rotated, original = dm.train_dataset[0][i], base_train[i]
        assert not torch.allclose(rotated[K.POSITIONS_KEY], original[K.POSITIONS_KEY])
        torch.testing.assert_close(_pairwise_distances(rotated[K.POSITIONS_KEY]), _pairwise_distances(original[K.POSITIONS_KEY]))
    # validation: what the dataloader yields is exactly the dataset item
    val_items = [dm.val_dataset[0][i] for i in range(len(dm.val_dataset[0]))]
    val_batches = list(dm.val_dataloader()[0])
    for item, batch in zip(val_items, val_batches):
        torch.testing.assert_close(batch[K.POSITIONS_KEY], item[K.POSITIONS_KEY], atol=0, rtol=0)
        torch.testing.assert_close(batch[K.FORCE_KEY], item[K.FORCE_KEY], atol=0, rtol=0)
    dm.teardown("fit")
    dm.setup("test")
    test_batches = list(dm.test_dataloader()[0])
    for i, batch in enumerate(test_batches):
        torch.testing.assert_close(batch[K.POSITIONS_KEY], dm.test_dataset[0][i][K.POSITIONS_KEY], atol=0, rtol=0)
    # switch off: training items are the dataset's own
    dm_off = _datamodule(xyz, enabled=False)
    dm_off.setup("fit")
    torch.testing.assert_close(dm_off.train_dataset[0][0][K.POSITIONS_KEY], dm_off.train_dataset[0].dataset[0][K.POSITIONS_KEY], atol=0, rtol=0)


def test_statistics_come_from_unrotated_data(tmp_path):
    xyz = tmp_path / "emt.xyz"
    _write_emt_xyz(xyz)
    dm = _datamodule(xyz)
    assert dm._augment.on
    with dm._unaugmented():
        assert not dm._augment.on
    assert dm._augment.on


def test_dataloader_workers_draw_different_rotations(tmp_path):
    xyz = tmp_path / "emt.xyz"
    _write_emt_xyz(xyz)

    def epoch_positions(dm):
        return [b[K.POSITIONS_KEY].clone() for b in dm.train_dataloader()]

    dm = _datamodule(xyz, num_workers=2)
    dm.setup("fit")
    first = epoch_positions(dm)
    second = epoch_positions(dm)  # a new epoch: new worker seeds
    # worker 0 serves items 0, 2, 4 and worker 1 items 1, 3, 5 (in loader order): with
    # identical streams their k-th draws would coincide; compare the rotations used
    base = dm.train_dataset[0].dataset

    def rotation_of(rotated, original):
        # Kabsch without centring: positions are rotated about the origin
        u, _, vt = torch.linalg.svd(original.T @ rotated)
        return (u @ vt).T

    rots = []
    order = list(dm.train_dataloader().sampler)  # sequential: no shuffle configured
    for pos, idx in zip(first, order):
        rots.append(rotation_of(pos, base[int(idx)][K.POSITIONS_KEY]))
    for i in range(len(rots)):
        for j in range(i):
            assert not torch.allclose(rots[i], rots[j], atol=1e-6), (i, j)
    # and epochs differ
    assert not all(torch.allclose(a, b) for a, b in zip(first, second))
    # a repeated run reproduces the first epoch exactly
    dm2 = _datamodule(xyz, num_workers=2)
    dm2.setup("fit")
    again = epoch_positions(dm2)
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
