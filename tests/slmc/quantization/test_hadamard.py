import math

import pytest
import torch

from slmc.quantization.hadamard import hadamard, hadamard_factors, rotation, sylvester


@pytest.mark.parametrize("order", [1, 2, 4, 12, 20, 24, 28, 36, 44, 60, 64, 256, 576, 896, 960, 1536])
def test_hadamard_orders_are_hadamard_matrices(order):
    matrix, how = hadamard(order)
    assert matrix.shape == (order, order) and set(matrix.unique().tolist()) <= {-1, 1}
    assert torch.equal(matrix @ matrix.T, order * torch.eye(order, dtype=torch.int64)), how


def test_constructions_named():
    assert hadamard(256)[1] == "Sylvester 256"
    assert hadamard(576)[1] == "Paley II (q=17) 36 ⊗ Sylvester 16"  # SmolLM-135M's hidden size
    assert hadamard(896)[1] == "Paley II (q=13) 28 ⊗ Sylvester 32"  # Qwen2.5-0.5B
    assert hadamard(1536)[1] == "Paley I (q=11) 12 ⊗ Sylvester 128"
    assert torch.equal(sylvester(2), torch.tensor([[1, 1], [1, -1]]))


@pytest.mark.parametrize("order", [3, 6, 92])
def test_orders_without_a_construction(order):
    assert hadamard(order) is None
    q, how = rotation(order, "hadamard", seed=0)
    assert how == f"random orthogonal (no Hadamard construction of order {order})"
    assert torch.allclose(q @ q.T, torch.eye(order, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("kind", ["hadamard", "random"])
def test_rotations_are_orthogonal_and_seeded(kind):
    q, how = rotation(96, kind, seed=3)
    assert q.dtype == torch.float64 and torch.allclose(q @ q.T, torch.eye(96, dtype=torch.float64), atol=1e-12)
    assert torch.equal(q, rotation(96, kind, seed=3)[0]) and not torch.equal(q, rotation(96, kind, seed=4)[0])
    if kind == "hadamard":
        assert how == "randomized Hadamard (Paley I (q=11) 12 ⊗ Sylvester 8)"
        assert torch.allclose(q.abs(), torch.full_like(q, 1 / math.sqrt(96)))  # every entry +-1/sqrt(n): spreads evenly
    else:
        assert how == "random orthogonal"


@pytest.mark.parametrize("order", [4, 128, 256, 576, 640, 1024, 1536])
def test_hadamard_factors_multiply_to_the_hadamard_matrix(order):
    """The online Hadamard (passes/rotate.py, R4) multiplies by A and B separately: A ⊗ B must be hadamard(order)."""
    first, second, how = hadamard_factors(order)
    assert first.shape[0] * second.shape[0] == order
    assert torch.equal(torch.kron(first, second), hadamard(order)[0]) and how == hadamard(order)[1]


def test_power_of_two_factors_are_balanced():
    first, second, _ = hadamard_factors(1024)
    assert (first.shape[0], second.shape[0]) == (32, 32)
    assert hadamard_factors(640)[0].shape[0] == 20 and hadamard_factors(92) is None
