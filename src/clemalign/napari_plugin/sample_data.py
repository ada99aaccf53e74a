"""Sample data: simulated pairs with a known answer (the CLI's ``simulate``)."""

from __future__ import annotations

from .layers import LayerData, layer_data, roi_outline_zyx


def _pair_layers(pair) -> list[LayerData]:
    from ..volume import parse_roi

    # the EM at the bottom, the fluorescence added on top of it
    layers = layer_data(pair.em, name="EM", role="em")
    layers += layer_data(pair.lm, name="LM", role="lm")
    for _, kwargs, _ in layers:  # the answer, for checking a registration by hand
        kwargs["metadata"]["clemalign"]["truth_em_to_lm"] = pair.em_to_lm.to_list()
    if getattr(pair, "roi", None):  # the region to register, as the widget's ROI input
        roi = parse_roi(pair.roi, pair.em.shape_zyx)  # its first and last planes
        layers.append(([roi_outline_zyx(roi, pair.em, roi.z0),
                        roi_outline_zyx(roi, pair.em, roi.z1 - 1)],
                       {"name": "EM ROI", "shape_type": "rectangle", "edge_color": "yellow",
                        "face_color": "transparent", "edge_width": 2}, "shapes"))
    return layers


def simulated_monolayer() -> list[LayerData]:
    """Adherent cells: an SBF-SEM-like EM and a two-channel confocal LM (small size)."""
    from ..synthetic import simulate_pair

    return _pair_layers(simulate_pair(seed=0, scale=0.3))


def simulated_tissue() -> list[LayerData]:
    """Thick tissue: a microCT-like EM region inside a deep two-photon LM stack."""
    from ..synthetic import simulate_tissue_pair

    return _pair_layers(simulate_tissue_pair(seed=0))
