"""3D pre-alignment: where, and how turned, the EM region of interest sits in the LM volume.

The XY pre-alignment matches projections, which is right for a monolayer but not for
thick tissue: the maximum-intensity projection of a deep stack of packed nuclei is a
uniform carpet of blobs.  Here the EM ROI is placed in the LM *volume*:

1. **structure scale** — the LM's blob scale, selected on a few of its planes (nuclei,
   cells; :func:`lm_structure_scale`), gives the 3D LoG scale of the shared structures;
2. **scan** — EM ROI and LM on one isotropic working grid as coarse as a voxel budget
   asks (block means: the full-resolution volumes never exist in float), blob responses
   at ``max(structure scale, 1.2 pixels)``, each LM plane divided by its robust spread
   (depth-dependent dimming must not weigh the shallow planes more); the EM response
   inside an upright cylinder inscribed in the ROI is turned over the full circle of
   angles (a step that moves the cylinder's rim by 1.5 scales), with and without an x
   mirror, with and without reversed z, and scored against the LM at every 3D offset
   by FFT normalised cross-correlation (:func:`clemalign.correlation.shared_support_ncc`:
   the cylinder is the same support for all of them).  Both contrast signs of the EM are
   read off the same maps; scores become robust z-values;
3. **hypotheses** — the best placement of each orientation that is a local maximum over
   angle, best first; the peak margin (best placement vs the best separate one) and the
   orientation margin (best orientation vs the best clearly different one) go to the
   confidence score;
4. **refinement** — each hypothesis is refined by a local search of the three rotation
   angles (tilts about x and y included) and the translation, maximising the NCC of
   sampled EM response values with the LM response read at the mapped points, first on
   the scan grid from a few tilted starts, then on grids twice finer down to the
   structure scale.

Output: an ``initial_em_to_lm`` with z, tilt and handedness, and the hypotheses for the
3D stage (:func:`clemalign.registration.register_3d`).

Modules: :mod:`~clemalign.prealign3d.config` (parameters, results),
:mod:`~clemalign.prealign3d.grid` (structure scale, scan grid, refinement levels, blob
responses), :mod:`~clemalign.prealign3d.geometry` (handedness, the cylinder, turned
templates), :mod:`~clemalign.prealign3d.scan` (steps 2–3),
:mod:`~clemalign.prealign3d.refine` (step 4), :mod:`~clemalign.prealign3d.stage`
(:func:`prealign_3d`).
"""

from .config import Hypothesis3D, Prealign3DConfig, Prealign3DResult
from .geometry import hand_name
from .grid import level_response, lm_structure_scale
from .refine import pose_ncc, refine_pose
from .stage import prealign_3d

__all__ = ["Prealign3DConfig", "Prealign3DResult", "Hypothesis3D", "prealign_3d",
           "lm_structure_scale", "refine_pose", "pose_ncc", "level_response", "hand_name"]
