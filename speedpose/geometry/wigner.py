"""Real Wigner-D matrices and spherical harmonics in e3nn's real basis, as flat feature vectors.

A band-limited function on SO(3) is stored as a flat coefficient vector ``F`` of length
``n_so3_coeffs(lmax) = sum_l (2l+1)^2`` (455 for lmax 6); block ``l`` is a (2l+1, 2l+1) matrix stored row-major.
Its value at a rotation ``R`` is

    f(R) = <F, wigner_features(R)>,   wigner_features(R) = concat_l sqrt(2l+1) * D^l(R).flatten()

so the features are orthonormal under the normalised Haar measure (``E_R[phi(R) phi(R)^T] = I``), and the left
translation ``f(g^-1 R)`` acts on coefficients as ``F^l -> D^l(g) F^l`` (on the ROW index).  ``D^l`` is e3nn's
real Wigner-D matrix: ``D^l(R1 R2) = D^l(R1) D^l(R2)``, ``Y^l(R x) = D^l(R) Y^l(x)`` for e3nn's real spherical
harmonics, and ``D^1(R) = P R P^T`` with P e3nn's l=1 axis order ((x, y, z) in e3nn 0.6, (y, z, x) in 0.5).

``R`` here is any rotation matrix acting on column vectors of the frame in question (for the I2S head: the frame of
the camera that sees the image).  Computation goes through the Lie algebra: ``D^l(exp(w^)) = expm(sum_i w_i X^l_i)``
with e3nn's generators ``X^l_i``; :func:`wigner_D_blocks` evaluates the same matrices faster from ZYZ Euler angles
with the closed form ``expm(t X) = sum_m cos(m t) E_m + sin(m t) F_m``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from e3nn import o3

from speedpose.errors import ShapeError

__all__ = [
    "n_s2_coeffs",
    "n_so3_coeffs",
    "so3_degree_slices",
    "so3_generators",
    "wigner_D_blocks",
    "wigner_D_blocks_euler_zyz",
    "axis_rotation_blocks",
    "matrix_to_euler_zyz",
    "wigner_features",
    "wigner_features_axis_angle",
    "s2_harmonics",
    "delta_coeffs",
]


def n_s2_coeffs(lmax: int) -> int:
    """Number of real spherical-harmonic coefficients up to degree lmax: (lmax+1)^2 (49 for lmax 6)."""
    return (lmax + 1) ** 2


def n_so3_coeffs(lmax: int) -> int:
    """Number of SO(3) Fourier coefficients up to degree lmax: sum_l (2l+1)^2 (455 for lmax 6)."""
    return (lmax + 1) * (2 * lmax + 1) * (2 * lmax + 3) // 3


def so3_degree_slices(lmax: int) -> list[slice]:
    """Slices of the flat SO(3) coefficient vector holding each degree l = 0..lmax (block of (2l+1)^2 entries)."""
    out, start = [], 0
    for l in range(lmax + 1):
        out.append(slice(start, start + (2 * l + 1) ** 2))
        start += (2 * l + 1) ** 2
    return out


@lru_cache(maxsize=None)
def _generators_f64(l: int) -> torch.Tensor:
    # e3nn's so3_generators is computed in float32; redo it in float64 with e3nn's real/complex change of basis.
    from e3nn.o3._wigner import change_basis_real_to_complex

    j = torch.arange(-l, l + 1, dtype=torch.float64)
    up = torch.sqrt(l * (l + 1) - j[:-1] * (j[:-1] + 1))  # <m+1|J+|m>
    raising = torch.diag(-up, diagonal=-1).to(torch.complex128)
    lowering = torch.diag(torch.sqrt(l * (l + 1) - j[1:] * (j[1:] - 1)), diagonal=1).to(torch.complex128)
    X = torch.stack([0.5 * (raising + lowering), torch.diag(1j * j.to(torch.complex128)),
                     -0.5j * (raising - lowering)])
    Q = change_basis_real_to_complex(l, dtype=torch.float64)
    X = Q.conj().T @ X @ Q
    return X.real.contiguous()


def so3_generators(l: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """Lie-algebra generators of the real degree-l representation.

    Returns:
        (3, 2l+1, 2l+1) antisymmetric matrices X_x, X_y, X_z with ``D^l(exp(t * axis_i^)) = expm(t * X_i)``
        (a rotation by t radians about the x, y or z axis of the frame).
    """
    return _generators_f64(l).to(dtype=dtype, device=device)


def _check_rot(R: torch.Tensor) -> None:
    if not isinstance(R, torch.Tensor) or R.ndim < 2 or tuple(R.shape[-2:]) != (3, 3):
        shape = tuple(R.shape) if hasattr(R, "shape") else type(R).__name__
        raise ShapeError(f"R: expected a torch tensor of shape (..., 3, 3), got {shape}")


def matrix_to_euler_zyz(R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ZYZ Euler angles (phi, theta, psi) with ``R = Rz(phi) Ry(theta) Rz(psi)``, theta in [0, pi]; radians.

    Uses the sum and difference angles (phi + psi from the upper-left block's rotation part, phi - psi from its
    reflection part), which stay accurate at theta = 0 and theta = pi where phi and psi alone are undefined.

    Args:
        R: (..., 3, 3) rotation matrices.
    Returns:
        three (...) tensors.
    """
    _check_rot(R)
    r = lambda i, j: R[..., i, j]  # noqa: E731
    theta = torch.atan2(torch.sqrt(r(2, 0) ** 2 + r(2, 1) ** 2), r(2, 2))
    s = torch.atan2(r(1, 0) - r(0, 1), r(0, 0) + r(1, 1))  # phi + psi
    d = torch.atan2(-(r(1, 0) + r(0, 1)), -(r(0, 0) - r(1, 1)))  # phi - psi
    phi, psi = (s + d) / 2, (s - d) / 2
    # (s, d) fix (phi, psi) up to adding pi to both, which flips the sign of theta: pick the branch with theta >= 0
    flip = (torch.cos(phi) * r(0, 2) + torch.sin(phi) * r(1, 2)) < 0
    phi = torch.where(flip, phi + math.pi, phi)
    psi = torch.where(flip, psi + math.pi, psi)
    return phi, theta, psi


@lru_cache(maxsize=None)
def _axis_expansion_f64(l: int, axis: int) -> torch.Tensor:
    """(2, l+1, d, d) with ``expm(t X_axis) = sum_m cos(m t) E[0, m] + sin(m t) E[1, m]`` (eigen-expansion)."""
    X = _generators_f64(l)[axis]
    lam, V = torch.linalg.eigh(1j * X.to(torch.complex128))  # i X v = lam v  ->  X v = -i lam v, lam = -m
    m = (-lam.real).round().to(torch.int64)
    E = torch.zeros(2, l + 1, 2 * l + 1, 2 * l + 1, dtype=torch.float64)
    for k in range(2 * l + 1):
        P = V[:, k:k + 1] @ V[:, k:k + 1].conj().T  # projector of eigenvalue exp(i m t)
        mk = int(m[k])
        # exp(i m t) P + exp(-i m t) conj(P) = 2 (cos(m t) Re P - sin(m t) Im P); m = 0 counted once
        if mk == 0:
            E[0, 0] += P.real
        elif mk > 0:
            E[0, mk] += 2 * P.real
            E[1, mk] -= 2 * P.imag
    return E


def axis_rotation_blocks(t: torch.Tensor, l: int, axis: int) -> torch.Tensor:
    """``D^l`` of rotations by angles t (...) [radians] about axis 0 (x), 1 (y) or 2 (z): (..., 2l+1, 2l+1)."""
    E = _axis_expansion_f64(l, axis).to(dtype=t.dtype, device=t.device)
    m = torch.arange(l + 1, dtype=t.dtype, device=t.device)
    mt = t.reshape(-1, 1) * m  # (n, l+1)
    d = 2 * l + 1
    # one GEMM [cos | sin] @ [E0; E1] (einsum with batch dims would dispatch to a slow bmm)
    out = torch.cat([torch.cos(mt), torch.sin(mt)], dim=1) @ E.reshape(2 * (l + 1), d * d)
    return out.reshape(tuple(t.shape) + (d, d))


@lru_cache(maxsize=None)
def _axis_expansion_padded_f64(l: int, axis: int, lmax: int) -> torch.Tensor:
    """(2 (lmax+1), d*d): the expansion of :func:`_axis_expansion_f64` padded with zeros for l < m <= lmax."""
    E = _axis_expansion_f64(l, axis)
    d = 2 * l + 1
    out = torch.zeros(2, lmax + 1, d * d, dtype=torch.float64)
    out[:, : l + 1] = E.reshape(2, l + 1, d * d)
    return out.reshape(2 * (lmax + 1), d * d)


def wigner_D_blocks_euler_zyz(phi: torch.Tensor, theta: torch.Tensor, psi: torch.Tensor,
                              lmax: int) -> list[torch.Tensor]:
    """Wigner-D blocks of ``Rz(phi) Ry(theta) Rz(psi)``: (...) radians -> list of (..., 2l+1, 2l+1).

    The cos/sin of m * angle are computed once for all degrees; each factor is then one GEMM per degree.
    """
    shape = tuple(phi.shape)
    m = torch.arange(lmax + 1, dtype=phi.dtype, device=phi.device)
    trig = []
    for t in (phi, theta, psi):
        mt = t.reshape(-1, 1) * m
        trig.append(torch.cat([torch.cos(mt), torch.sin(mt)], dim=1))  # (n, 2 (lmax+1))
    out = [torch.ones(shape + (1, 1), dtype=phi.dtype, device=phi.device)]
    for l in range(1, lmax + 1):
        d = 2 * l + 1
        Ez, Ey = (_axis_expansion_padded_f64(l, ax, lmax).to(dtype=phi.dtype, device=phi.device) for ax in (2, 1))
        Dphi, Dtheta, Dpsi = ((tr @ E).reshape(-1, d, d) for tr, E in zip(trig, (Ez, Ey, Ez)))
        out.append((Dphi @ Dtheta @ Dpsi).reshape(shape + (d, d)))
    return out


def wigner_D_blocks(R: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    """Real Wigner-D matrices D^l(R) for l = 0..lmax.

    Computed from ZYZ Euler angles as ``D(Rz) D(Ry) D(Rz)``, each factor a closed-form sum of cos/sin of
    m * angle (no matrix exponentials).

    Args:
        R: (..., 3, 3) rotation matrices (float32 or float64; computed in at least float32, autocast disabled).
        lmax: maximum degree.
    Returns:
        list of (..., 2l+1, 2l+1) tensors in R's dtype (float32 when R is half precision).
    """
    _check_rot(R)
    dtype = R.dtype if R.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(R.device.type, enabled=False):
        return wigner_D_blocks_euler_zyz(*matrix_to_euler_zyz(R.to(dtype)), lmax)


def _blocks_from_axis_angle(w: torch.Tensor, lmax: int) -> list[torch.Tensor]:
    out = []
    for l in range(lmax + 1):
        X = so3_generators(l, w.dtype, w.device)
        A = torch.einsum("...i,ijk->...jk", w, X)
        out.append(torch.linalg.matrix_exp(A) if l > 0 else torch.ones_like(A))
    return out


def _flatten_blocks(blocks: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([math.sqrt(2 * l + 1) * D.flatten(-2) for l, D in enumerate(blocks)], dim=-1)


def wigner_features(R: torch.Tensor, lmax: int) -> torch.Tensor:
    """Flat, orthonormal Wigner-D features of rotations.

    Args:
        R: (..., 3, 3) rotation matrices.
        lmax: maximum degree.
    Returns:
        (..., n_so3_coeffs(lmax)) ``concat_l sqrt(2l+1) D^l(R).flatten()`` (row-major blocks).
    """
    return _flatten_blocks(wigner_D_blocks(R, lmax))


def wigner_features_axis_angle(w: torch.Tensor, lmax: int) -> torch.Tensor:
    """:func:`wigner_features` of ``exp(w^)`` for rotation vectors w (..., 3) in radians; smooth in w (also at 0)."""
    if w.shape[-1:] != (3,):
        raise ShapeError(f"w: expected shape (..., 3), got {tuple(w.shape)}")
    with torch.autocast(w.device.type, enabled=False):
        return _flatten_blocks(_blocks_from_axis_angle(w.float() if w.dtype not in (torch.float32, torch.float64)
                                                       else w, lmax))


def s2_harmonics(xyz: torch.Tensor, lmax: int) -> torch.Tensor:
    """e3nn real spherical harmonics, 'component' normalisation (``E_x[Y(x) Y(x)^T] = I`` on the unit sphere).

    Args:
        xyz: (..., 3) directions (normalised here), in the same frame as the rotations of :func:`wigner_features`.
    Returns:
        (..., (lmax+1)^2) values, degree blocks of length 2l+1 in order l = 0..lmax; ``Y(R x) = D(R) Y(x)``.
    """
    if xyz.shape[-1:] != (3,):
        raise ShapeError(f"xyz: expected shape (..., 3), got {tuple(xyz.shape)}")
    return o3.spherical_harmonics(list(range(lmax + 1)), xyz, normalize=True, normalization="component")


def delta_coeffs(R: torch.Tensor, lmax: int) -> torch.Tensor:
    """Coefficients of the band-limited delta at rotations R: ``f(g) = sum_l (2l+1) chi_l(R^-1 g)``, peaked at g = R.

    Args:
        R: (..., 3, 3) rotation matrices.
    Returns:
        (..., n_so3_coeffs(lmax)), equal to ``wigner_features(R, lmax)``.
    """
    return wigner_features(R, lmax)
