"""Dense linear algebra for the estimator's tiny systems (one row per member, plus c).

The systems have at most ``max_models_per_request + 1`` unknowns, so plain Gaussian
elimination is faster than converting to and from an array library.
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = list[list[float]]


class SingularError(ValueError):
    pass


def solve(matrix: Sequence[Sequence[float]], rhs: Sequence[Sequence[float]]) -> Matrix:
    """X with matrix @ X = rhs (Gaussian elimination, partial pivoting); rhs is n x m."""
    n = len(matrix)
    m = len(rhs[0]) if rhs else 0
    a = [list(row) + list(rhs[i]) for i, row in enumerate(matrix)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) < 1e-300:
            raise SingularError(f"singular at column {col}")
        a[col], a[pivot] = a[pivot], a[col]
        head = a[col]
        inv = 1.0 / head[col]
        for r in range(col + 1, n):
            factor = a[r][col] * inv
            if factor:
                row = a[r]
                for k in range(col, n + m):
                    row[k] -= factor * head[k]
    x = [[0.0] * m for _ in range(n)]
    for r in range(n - 1, -1, -1):
        row = a[r]
        for j in range(m):
            total = row[n + j] - sum(row[k] * x[k][j] for k in range(r + 1, n))
            x[r][j] = total / row[r]
    return x


def solve_vector(matrix: Sequence[Sequence[float]], vector: Sequence[float]) -> list[float]:
    return [row[0] for row in solve(matrix, [[v] for v in vector])]


def inverse(matrix: Sequence[Sequence[float]]) -> Matrix:
    n = len(matrix)
    return solve(matrix, [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)])
