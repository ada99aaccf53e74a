"""A section pair: one EM plane and a few LM planes cut from a simulated monolayer pair.

Serial-section SEM/TEM and array tomography image sections of 50–1000 nm; a widefield or
confocal image of the same region is one to a few planes.  :func:`section_of` makes such
a pair from a :class:`SimulatedPair` of the monolayer scene, with a truth for the plane.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .pair import SimulatedPair

__all__ = ["section_of"]


def section_of(pair: SimulatedPair, *, thickness_um: float = 1.0,
               lm_planes: int = 1) -> SimulatedPair:
    """One EM section through ``pair``'s labelled structures and the LM planes around it.

    Parameters
    ----------
    pair : SimulatedPair
        A monolayer pair (:func:`~clemalign.synthetic.simulate_pair`).
    thickness_um : float
        Section thickness, µm: the EM planes averaged into the one section plane.
    lm_planes : int
        LM planes kept, centred on the one the section's centre maps to.

    Returns
    -------
    SimulatedPair
        ``em``: one plane (z voxel = ``thickness_um``); ``lm``: ``lm_planes`` planes, all
        channels; ``em_to_lm``: the 3D truth of ``pair``; landmarks: ``pair``'s EM
        landmarks moved onto the section plane, their LM points the truth's in x and y on
        the LM plane the section's centre maps to (a plane has no z to fit).
        ``scene`` is ``"section"``.

    Raises
    ------
    InputError
        ``thickness_um`` or ``lm_planes`` out of range for ``pair``.
    """
    em, lm = pair.em, pair.lm
    sz = float(em.voxel_size_um[0])
    n = int(round(thickness_um / sz))
    if not 1 <= n <= em.shape_zyx[0]:
        raise InputError(f"thickness_um: expected {sz:g}–{em.extent_um[0]:g} µm for this EM, "
                         f"got {thickness_um}")
    # centred on the labelled structures (the landmarks' median depth), not the block's
    # middle, which may lie in the resin above a monolayer
    k_label = em.physical_to_index(np.median(pair.landmarks_em_um, axis=0)[None])[0, 0]
    k0 = int(np.clip(round(k_label - (n - 1) / 2.0), 0, em.shape_zyx[0] - n))
    data = em.data[k0:k0 + n].mean(axis=0, keepdims=True).astype(em.data.dtype)
    centre_k = k0 + (n - 1) / 2.0
    origin = em.index_to_physical(np.array([[centre_k, 0.0, 0.0]]))[0]
    section = Volume(data, (n * sz, *em.voxel_size_um[1:]), tuple(origin), em.channel_names,
                     em.source)
    ny, nx = section.shape_zyx[1:]
    centre = section.index_to_physical(np.array([[0.0, (ny - 1) / 2.0, (nx - 1) / 2.0]]))
    plane = int(round(lm.physical_to_index(pair.em_to_lm.apply(centre))[0, 0]))
    first = plane - (lm_planes - 1) // 2
    if lm_planes < 1 or first < 0 or first + lm_planes > lm.shape_zyx[0]:
        raise InputError(f"lm_planes: expected 1–{lm.shape_zyx[0]} planes around LM plane "
                         f"{plane}, got {lm_planes}")
    lm_origin = lm.index_to_physical(np.array([[first, 0.0, 0.0]]))[0]
    lm_cut = Volume(lm.data[..., first:first + lm_planes, :, :], lm.voxel_size_um,
                    tuple(lm_origin), lm.channel_names, lm.source)
    on_plane = np.array(pair.landmarks_em_um, float)
    on_plane[:, 2] = origin[2]
    lm_points = pair.em_to_lm.apply(on_plane)
    lm_points[:, 2] = lm.index_to_physical(np.array([[plane, 0.0, 0.0]]))[0, 2]
    parameters = {**pair.parameters, "section_thickness_um": n * sz, "lm_planes": lm_planes,
                  "lm_plane": plane - first}
    return replace(pair, em=section, lm=lm_cut, landmarks_em_um=on_plane,
                   landmarks_lm_um=lm_points, parameters=parameters, roi=None,
                   scene="section")
