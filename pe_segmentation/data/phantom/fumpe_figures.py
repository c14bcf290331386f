"""FUMPE's embolus figures, measured once from its 35 expert masks: what the phantoms' emboli are drawn from.

Source: the FUMPE dataset's expert embolus masks (Masoudi et al., "A new dataset of computed-tomography
angiography images for computer-aided detection of pulmonary embolism", Scientific Data 5, 180180, 2018;
CC BY 4.0), 35 patients, as NIfTI from the CTISPED project. Measured by ``scripts/fumpe_figures.py`` (which
skips when the masks are absent): 26-connected components of each mask, a component's volume being its voxel
count times the header's voxel volume. Only these derived figures are kept here, never the masks.

They differ a little from the rounded figures in the masks' README (69% / 23% / 8% over 500, 50-500, under
50 mm^3; component volume 5th/25th/50th/75th/95th percentiles about 15 / 355 / 1,170 / 5,400 / 26,600 mm^3):
this count keeps every component, including specks of a few voxels, and takes numpy's linear quantiles of
all 95 components.

The CT fingerprint of a published nnU-Net PE model (430 CTPAs) gives the attenuation inside labelled emboli:
mean 37, median 47, SD 92 HU, 0.5th-99.5th percentiles -195 to 305 HU (partial volume with contrast and lung
at the clot's boundary).
"""

from __future__ import annotations

SOURCE = (
    "FUMPE expert masks (Masoudi et al., Sci Data 2018; CC BY 4.0), 35 patients; 26-connected components; "
    "measured by scripts/fumpe_figures.py"
)
PATIENTS = 35

#: Emboli (26-connected components) per patient, PAT001 to PAT035.
EMBOLI_PER_PATIENT: tuple[int, ...] = (
    2,
    2,
    2,
    5,
    1,
    1,
    2,
    2,
    1,
    1,
    1,
    3,
    1,
    6,
    2,
    15,
    3,
    2,
    2,
    5,
    2,
    1,
    3,
    0,
    1,
    1,
    3,
    1,
    4,
    2,
    6,
    0,
    3,
    7,
    2,
)

#: Labelled embolus volume per patient in mL, PAT001 to PAT035.
BURDEN_ML_PER_PATIENT: tuple[float, ...] = (
    7.304,
    0.531,
    19.157,
    2.046,
    36.933,
    0.675,
    62.229,
    6.47,
    6.416,
    0.298,
    1.075,
    4.055,
    10.249,
    3.089,
    3.839,
    6.638,
    37.617,
    5.249,
    10.31,
    1.11,
    46.693,
    0.522,
    57.649,
    0.0,
    5.569,
    46.271,
    7.656,
    3.144,
    18.122,
    9.94,
    9.523,
    0.0,
    13.616,
    17.953,
    3.427,
)

#: (quantile, component volume in mm^3) over all 95 components of the 35 masks.
COMPONENT_VOLUME_QUANTILES_MM3: tuple[tuple[float, float], ...] = (
    (0.0, 0.8),
    (0.01, 2.1),
    (0.025, 3.1),
    (0.05, 9.9),
    (0.1, 68.5),
    (0.15, 180.7),
    (0.2, 220.2),
    (0.25, 299.0),
    (0.3, 372.3),
    (0.35, 515.9),
    (0.4, 593.5),
    (0.45, 725.4),
    (0.5, 1053.9),
    (0.55, 1278.9),
    (0.6, 1612.5),
    (0.65, 2267.8),
    (0.7, 3173.0),
    (0.75, 4878.1),
    (0.8, 6114.3),
    (0.85, 7894.4),
    (0.9, 16870.0),
    (0.95, 26052.3),
    (0.975, 36115.8),
    (0.99, 38806.9),
    (1.0, 46271.0),
)
#: Component volumes in mm^3 of each patient, largest first, PAT001 to PAT035.
COMPONENT_VOLUMES_MM3_PER_PATIENT: tuple[tuple[float, ...], ...] = (
    (5512.7, 1791.3),  # PAT001
    (274.0, 257.5),  # PAT002
    (19155.2, 2.2),  # PAT003
    (1213.6, 352.6, 222.1, 209.8, 48.1),  # PAT004
    (36933.3,),  # PAT005
    (675.0,),  # PAT006
    (34597.6, 27631.6),  # PAT007
    (6290.5, 180.0),  # PAT008
    (6415.8,),  # PAT009
    (298.1,),  # PAT010
    (1075.1,),  # PAT011
    (3151.4, 596.7, 307.3),  # PAT012
    (10248.7,),  # PAT013
    (2206.2, 740.2, 118.4, 10.3, 8.9, 4.8),  # PAT014
    (3178.0, 660.9),  # PAT015
    (
        1347.6,
        1053.9,
        719.1,
        614.8,
        588.7,
        526.8,
        427.5,
        427.5,
        299.9,
        212.7,
        186.9,
        142.5,
        51.5,
        37.8,
        0.8,
    ),  # PAT016
    (22845.4, 14769.0, 2.2),  # PAT017
    (4698.0, 551.1),  # PAT018
    (6633.8, 3676.2),  # PAT019
    (363.7, 337.6, 198.7, 116.3, 94.0),  # PAT020
    (25375.5, 21317.7),  # PAT021
    (522.2,),  # PAT022
    (38330.4, 18270.6, 1047.7),  # PAT023
    (),  # PAT024
    (5568.6,),  # PAT025
    (46271.0,),  # PAT026
    (6070.2, 1018.6, 567.6),  # PAT027
    (3144.5,),  # PAT028
    (10291.8, 5058.3, 1471.6, 1299.9),  # PAT029
    (8276.2, 1663.8),  # PAT030
    (6047.0, 1686.8, 1127.4, 406.8, 234.3, 20.9),  # PAT031
    (),  # PAT032
    (6755.4, 3707.9, 3152.9),  # PAT033
    (8020.9, 3289.9, 2822.4, 1303.9, 1230.0, 827.4, 458.9),  # PAT034
    (1848.7, 1578.3),  # PAT035
)
COMPONENTS = 95

#: Share of the components in each size class (over 500, 50-500, under 50 mm^3).
CLASS_SHARES = {"central": 0.6526, "segmental": 0.2526, "small": 0.0947}

#: HU inside labelled emboli from the nnU-Net fingerprint of 430 CTPAs: percentile -> HU, with mean and SD.
LABELLED_HU_PERCENTILES = {0.5: -195.0, 50.0: 47.0, 99.5: 305.0}
LABELLED_HU_MEAN = 37.0
LABELLED_HU_SD = 92.0
