"""The battery sample as layers along y (the slit's long axis = the spectrum image's position axis).

A TEM lamella of uniform thickness t (along the beam) is cut across the battery layers. y runs along
the slit: positions in the electrolyte are measured from the current-collector interface (y = 0 at the
start of the sample's ``origin_layer``; metals at negative y). For every position the sample reports
what the EELS synthesis needs (:class:`ColumnState`): areal densities of every element (atoms/m^2),
thickness, t/lambda, and the Li-dependent ELNES drivers of physics.md §1.8 (Ti3+ fraction f3, O-O
distance R, O-K pre-peak amplitude).

The Li concentration ratio c/c0 at each position is an input (owned by the Li-transport model);
:meth:`Sample.reference_li_ratio` gives the paper's end-of-cycling profile for tests and dry runs.

Across the slit (x) the specimen has its own structure (``across_slit``: interface tilt, wedge, edge;
simulators/specimen_shape.py), which the world applies where the strip sits. Simplifications (named):
uniform specimen thickness along y, constant volume on Li insertion (Li adds mass
and atoms, nothing else changes), Ti and O areal densities independent of Li (§1.8), sharp layer
boundaries (the microscope's blur is applied by the EELS synthesis and the detector).
"""

from __future__ import annotations

from dataclasses import dataclass, field


import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from insitem.simulators.cross_sections import imfp_iakoubovskii_m, imfp_m
from insitem.simulators.specimen_shape import AcrossSlit

AVOGADRO = 6.02214076e23

#: standard atomic weights, g/mol (IUPAC)
ATOMIC_MASS_g_mol: dict[str, float] = {
    "Li": 6.94, "C": 12.011, "O": 15.999, "Al": 26.982, "Si": 28.085, "P": 30.974, "Ti": 47.867,
    "V": 50.942, "Fe": 55.845, "Co": 58.933, "Ge": 72.630, "W": 183.84, "Pt": 195.08,
}

#: valence electrons per atom for the free-electron plasmon energy (physics.md §1.3 counts Li 1,
#: Al 3, Ti 4, P 5, O 6 for LATP; the rest by the same outer-shell rule [est])
VALENCE_ELECTRONS: dict[str, int] = {
    "Li": 1, "C": 4, "O": 6, "Al": 3, "Si": 4, "P": 5, "Ti": 4, "V": 5, "Fe": 8, "Co": 9, "Ge": 4,
    "W": 6, "Pt": 10,
}


def free_electron_plasmon_eV(formula: dict[str, float], density_g_cm3: float) -> float:
    """Ep = 28.816 sqrt(Nv rho / M) eV (physics.md §1.3): 24.7 eV for LATP at 2.94 g/cm^3."""
    nv = sum(n * VALENCE_ELECTRONS[el] for el, n in formula.items())
    M = sum(n * ATOMIC_MASS_g_mol[el] for el, n in formula.items())
    return float(28.816 * np.sqrt(nv * density_g_cm3 / M))


class Material(BaseModel):
    """One phase: formula unit, density and its valence-loss (plasmon) parameters.

    ``shallow_edges`` are the M/N/O-shell edges of physics.md §1.3/§1.6 that hydrogenic K/L cross sections
    do not cover; they are part of the valence single-scattering shape: (label, onset_eV, weight), weight =
    fraction of this material's valence single scattering [est].
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    formula: dict[str, float] = Field(description="atoms per formula unit")
    density_g_cm3: float = Field(gt=0)
    plasmon_energy_eV: float | None = Field(default=None, description="None: free-electron value of §1.3")
    plasmon_width_eV: float = Field(default=8.0, gt=0, description="Drude damping dEp (FWHM), eV")
    shallow_edges: list[tuple[str, float, float]] = Field(default_factory=list)
    li_per_fu_at_c0: float | None = Field(
        default=None, description="Li atoms per formula unit at c/c0 = 1; None: the formula's Li"
    )
    o_k_prepeak: float = Field(
        default=1.0, ge=0, le=1,
        description="O-K pre-peak (O 2p - empty TM 3d) relative to a d0 Ti oxide's: 1 for LATP/LASGTP, 0 without "
        "open 3d states (LAGP, Li2O, LiFePO4), physics-seed-systems.md §D.1",
    )
    o_k_fe3_prepeak: float = Field(
        default=0.0, ge=0, le=1,
        description="fraction of the O atoms with the single O-K pre-edge of O 2p - Fe3+ 3d states (528.5 eV; "
        "1 in FePO4, 0 in LiFePO4, which has none), physics-seed-systems.md §B.1, §D.1",
    )
    valence_states: dict[str, float] = Field(
        default_factory=dict,
        description="formal oxidation state of its 3d transition metals (e.g. {'Fe': 2}): selects their L2,3 "
                    "white lines (simulators/eels.py TM_WHITE_LINES); Ti follows the Ti3+ fraction instead",
    )
    valence_oscillators: list[tuple[float, float, float]] = Field(
        default_factory=list,
        description="interband peaks of the loss function: (energy eV, width eV, height), a Lorentz oscillator "
                    "whose single-scattering maximum is height x the Drude plasmon's (simulators/eels.py "
                    "valence_ssd), e.g. the 5 eV peak of FePO4 (physics-seed-systems.md B.1)",
    )

    @property
    def molar_mass_g_mol(self) -> float:
        return sum(n * ATOMIC_MASS_g_mol[el] for el, n in self.formula.items())

    @property
    def plasmon_eV(self) -> float:
        if self.plasmon_energy_eV is not None:
            return self.plasmon_energy_eV
        return free_electron_plasmon_eV(self.formula, self.density_g_cm3)


class Layer(BaseModel):
    """A layer of the stack along y. ``li_host``: its Li content follows the c/c0 input."""

    model_config = ConfigDict(extra="forbid")

    name: str
    material: Material
    thickness_m: float = Field(gt=0, description="extent along y, m")
    li_host: bool = False


# ----------------------------------------------------------------------------------------------- materials

#: LASGTP glass-ceramic (OHARA-type Li2O-Al2O3-SiO2-P2O5-TiO2-GeO2): NASICON Li(1+x+y)Al(x)(Ti,Ge)(2-x)
#: Si(y)P(3-y)O12 with x = 0.4, y = 0.1 [est, charge-balanced]; density 2.94 g/cm^3 as LATP [est, §1.3];
#: Ep 24.7 eV / dEp 8 eV (§1.3, §6.1; Si/Ge change Ep by < 1 eV; no measured value for phosphate
#: glass-ceramics found). Shallow edges §1.3/§1.6 [onsets S:XRDB]; Ti M2,3 is a delayed edge with its
#: maximum near 47 eV (simulators/eels.py DELAYED_SHALLOW_EDGES_eV) and weight 0.037 [derived: Bethe
#: f-sum share of the 6 x 1.4 Ti 3p electrons against the 96 valence electrons per formula unit, each
#: weighted by its (1/E) ln(1 + beta^2/theta_E^2) at 10 mrad; docs/physics-sources.md]; other weights [est].
LASGTP = Material(
    name="LASGTP",
    formula={"Li": 1.5, "Al": 0.4, "Ti": 1.4, "Ge": 0.2, "Si": 0.1, "P": 2.9, "O": 12.0},
    density_g_cm3=2.94,
    plasmon_energy_eV=24.7,
    plasmon_width_eV=8.0,
    shallow_edges=[("Ge M4,5", 29.2, 0.01), ("Ti M2,3", 32.6, 0.037), ("Ti M1", 58.7, 0.004),
                   ("Ge M3", 120.8, 0.002), ("Ge M2", 124.9, 0.001)],
)

#: Pt current collector: 21.45 g/cm^3; broad metal loss (Ep free-electron, dEp 15 eV [est]); O2,3 / N6,7 /
#: N2,3 onsets §1.6 [S:XRDB]; weights [est].
PLATINUM = Material(
    name="Pt",
    formula={"Pt": 1.0},
    density_g_cm3=21.45,
    plasmon_width_eV=15.0,
    shallow_edges=[("Pt O3", 51.7, 0.05), ("Pt O2", 65.3, 0.03), ("Pt N7", 71.2, 0.03),
                   ("Pt N6", 74.5, 0.02), ("Pt N3", 519.4, 0.002), ("Pt N2", 609.1, 0.001)],
)

#: protective W (FIB deposition; treated as dense W [est]); onsets W O2,3 ~36.8/45.3, N7/N6 31.4/33.6,
#: N3 423.6, N2 490.4 eV (X-ray data booklet values [est]); weights [est]
TUNGSTEN = Material(
    name="W",
    formula={"W": 1.0},
    density_g_cm3=19.25,
    plasmon_width_eV=15.0,
    shallow_edges=[("W N7,6", 31.4, 0.03), ("W O3", 36.8, 0.04), ("W O2", 45.3, 0.02),
                   ("W N3", 423.6, 0.002), ("W N2", 490.4, 0.001)],
)

# Simplified materials for the two other presets (compositions from the chemical formulae, densities [est])
# O-K pre-peak per material (physics-seed-systems.md §D.1): none in LiFePO4 (Mott-Hubbard Fe2+; the FePO4
# pre-edge at 528.5 eV, which grows on delithiation, is the FePO4 phase's own: `o_k_fe3_prepeak`), LAGP (Ge4+ d10) and Li2O (no d states);
# weak in LVP (V3+ d2) [est 0.3].
LFP = Material(name="LiFePO4", formula={"Li": 1, "Fe": 1, "P": 1, "O": 4}, density_g_cm3=3.6, valence_states={"Fe": 2},
               shallow_edges=[("Fe M2,3", 52.7, 0.04)], o_k_prepeak=0.0)
LAGP = Material(name="LAGP", formula={"Li": 1.5, "Al": 0.5, "Ge": 1.5, "P": 3, "O": 12}, density_g_cm3=3.4,
                shallow_edges=[("Ge M4,5", 29.2, 0.04), ("Ge M3", 120.8, 0.004)], o_k_prepeak=0.0)
LVP = Material(name="Li3V2(PO4)3", formula={"Li": 3, "V": 2, "P": 3, "O": 12}, density_g_cm3=2.8, valence_states={"V": 3},
               shallow_edges=[("V M2,3", 37.2, 0.05)], o_k_prepeak=0.3)
SILICON = Material(name="Si", formula={"Si": 1}, density_g_cm3=2.33, li_per_fu_at_c0=0.1)
LI2O = Material(name="Li2O", formula={"Li": 2, "O": 1}, density_g_cm3=2.01, o_k_prepeak=0.0)


class SampleParameters(BaseModel):
    """Sample geometry and composition (layers ordered along increasing y).

    y = 0 is the start of ``origin_layer``; the stack starts at minus the summed thickness of the layers
    before it. Positions outside the stack take the first/last layer. ``electrode_thickness_m``: the part
    of the origin layer next to y = 0 that is the in-situ formed (amorphous) electrode [Y14: ~400 nm];
    it is its own layer for the valence loss (``electrode_plasmon_width_eV``, broader for the amorphous
    phase [est]).
    """

    model_config = ConfigDict(extra="forbid")

    layers: list[Layer]
    origin_layer: str
    thickness_m: float = Field(default=100e-9, gt=0, description="specimen thickness t along the beam (§6.1)")
    electrode_thickness_m: float = Field(default=400e-9, ge=0)
    electrode_plasmon_width_eV: float = Field(default=9.0, gt=0)
    across_slit: AcrossSlit = Field(
        default_factory=AcrossSlit,
        description="structure across the slit (x): interface tilt, wedge, edge (simulators/specimen_shape.py)",
    )
    # §1.8 maps from c/c0 to ELNES drivers
    ti3_threshold: float = Field(
        default=6.0, description="c/c0 below which the inserted electrons go to O, not Ti ([Y14]: Ti3+ only above ~6 c0)"
    )
    R_parent_nm: float = 0.280
    R_electrode_nm: float = 0.310
    R_saturation_ratio: float = Field(default=8.5, description="c/c0 at which R reaches the electrode value")
    prepeak_k: float = Field(default=0.1, ge=0, description="k_pre of A_pre(c) (§1.8)")
    # reference Li profile (§3.5 relaxed pulse fitted to [Y14]): c/c0 = 1 + A exp(-(y/w)^2)
    reference_peak_ratio: float = 8.5
    reference_width_m: float = 251e-9

    @model_validator(mode="after")
    def _check(self) -> "SampleParameters":
        names = [layer.name for layer in self.layers]
        if self.origin_layer not in names:
            raise ValueError(f"origin_layer {self.origin_layer!r} not among layers {names}")
        if len(set(names)) != len(names):
            raise ValueError("layer names must be unique")
        return self

    @classmethod
    def lasgtp_cell(cls, **overrides) -> "SampleParameters":
        """The [Y14] cell as cut for SR-EELS: W protection | Pt collector | LASGTP (electrode inside).

        Layer widths along y: W 300 nm, Pt 200 nm [est]; electrolyte 90 um ([Y14]; only the first few um
        matter). Electrode 400 nm [Y14].

        Across the slit (docs/drift.md, "Across the slit"; all [est]): a wedge of 3 nm of thickness per um
        of x (15 nm over a 5 um thinned window), the thinned window's free edge 1 um from the strip, the
        slit aligned across the layers (tilt 0: the operator rotates the spectrum image until the
        interface is a straight row; a residual tilt is a parameter).
        """
        layers = [
            Layer(name="W", material=TUNGSTEN, thickness_m=300e-9),
            Layer(name="Pt", material=PLATINUM, thickness_m=200e-9),
            Layer(name="LASGTP", material=LASGTP, thickness_m=90e-6, li_host=True),
        ]
        overrides.setdefault("across_slit", AcrossSlit(thickness_gradient=3e-3, edge_x_m=1e-6))
        return cls(layers=layers, origin_layer="LASGTP", **overrides)

    @classmethod
    def lfp_lagp_lvp_lamella(cls, **overrides) -> "SampleParameters":
        """[P2] micro-battery lamella, simplified: Pt | LFP 1 um | LAGP 1.5 um | LVP 1 um, all Li hosts,
        c/c0 applied to each host's own parent Li content; no Ti chemistry; y = 0 at the LFP|LAGP
        interface; no in-situ electrode layer."""
        layers = [
            Layer(name="Pt", material=PLATINUM, thickness_m=200e-9),
            Layer(name="LFP", material=LFP, thickness_m=1e-6, li_host=True),
            Layer(name="LAGP", material=LAGP, thickness_m=1.5e-6, li_host=True),
            Layer(name="LVP", material=LVP, thickness_m=1e-6, li_host=True),
        ]
        return cls(layers=layers, origin_layer="LAGP", electrode_thickness_m=0.0, **overrides)

    @classmethod
    def si_nanoparticles(cls, **overrides) -> "SampleParameters":
        """[P3] Si nanoparticle on LiOx@Li, simplified: Li2O | Si (100 nm) as flat layers; in Si, c/c0 = 1
        means 0.1 Li per Si (c/c0 = 37.5 is Li3.75Si); y = 0 at the Li2O|Si interface; no electrode layer."""
        layers = [
            Layer(name="Li2O", material=LI2O, thickness_m=300e-9),
            Layer(name="Si", material=SILICON, thickness_m=100e-9, li_host=True),
        ]
        return cls(layers=layers, origin_layer="Si", electrode_thickness_m=0.0, **overrides)


@dataclass(frozen=True)
class ColumnState:
    """What the beam sees at each position (one entry per row; arrays of length n_rows).

    ``layer_index`` indexes ``layer_names`` (the stack's layers plus, if present, "electrode" last).
    Areal densities in atoms/m^2; ``t_over_lambda`` for the losses collected within beta (§1.4),
    ``t_over_lambda_all`` for all angles (used for the unscattered fraction); ``R_nm`` O-O distance;
    ``prepeak_amplitude`` A_pre/A_pre0 in [0, 1]; plasmon energy / width in eV (constant per layer).
    """

    y_m: np.ndarray
    li_ratio: np.ndarray
    layer_index: np.ndarray
    layer_names: tuple[str, ...]
    areal_density_per_m2: dict[str, np.ndarray]
    thickness_m: np.ndarray
    density_g_cm3: np.ndarray
    t_over_lambda: np.ndarray
    t_over_lambda_all: np.ndarray
    f_ti3: np.ndarray
    R_nm: np.ndarray
    prepeak_amplitude: np.ndarray
    plasmon_energy_eV: np.ndarray
    plasmon_width_eV: np.ndarray
    layer_materials: tuple[Material, ...] = field(default=())
    # -- the phases each column crosses (structured samples: simulators/silicon.py, lamella.py) --
    #: path length of every phase of ``layer_materials`` along the beam in each row, m, shape
    #: (n_rows, n_phases); rows sum to ``thickness_m``; ``layer_index`` is the longest one (or the
    #: only one for a layer stack). Each phase's Material carries its actual composition (inserted Li
    #: included) and density, so a row's valence loss is sum_p (L_p / lambda_p) x that phase's shape.
    phase_path_m: np.ndarray | None = None
    #: L_p / lambda_p of every phase in each row (rows x phases, beta-limited mean free path of the
    #: phase's own density): how a row's valence scattering divides among its phases; rows sum to
    #: ``t_over_lambda``. Set with ``phase_path_m``.
    phase_t_over_lambda: np.ndarray | None = None
    #: Li atoms per m^3 averaged over the column (areal Li / thickness; 0 in vacuum): the one
    #: concentration of the structured samples (c/c0 has no meaning in c-Si, which holds no Li)
    li_per_m3: np.ndarray | None = None
    #: mean formal oxidation state per row of each 3d metal whose phases declare one
    #: (``Material.valence_states``), weighted by that metal's atoms in each phase of the row
    oxidation_state: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.y_m.shape[0])

    def phase_paths(self) -> np.ndarray:
        """``phase_path_m``, or for a plain layer stack the thickness in each row's own layer."""
        if self.phase_path_m is not None:
            return self.phase_path_m
        out = np.zeros((self.n_rows, max(len(self.layer_materials), int(self.layer_index.max(initial=0)) + 1)))
        out[np.arange(self.n_rows), self.layer_index] = self.thickness_m
        return out


def o_o_distance_nm(li_ratio: np.ndarray, R0_nm: float = 0.280, R1_nm: float = 0.310, c_sat: float = 8.5) -> np.ndarray:
    """R = R0 + (R1 - R0) clip((c/c0 - 1)/(c_sat - 1), 0, 1), nm (physics.md §1.8 [est] mapping)."""
    return R0_nm + (R1_nm - R0_nm) * np.clip((np.asarray(li_ratio) - 1.0) / (c_sat - 1.0), 0.0, 1.0)


def ti3_fraction(li_ratio: np.ndarray, threshold: float = 6.0, li_per_fu_at_c0: float = 1.5,
                 ti_per_fu: float = 1.4) -> np.ndarray:
    """Ti3+ fraction from the electrons inserted: each Li beyond the parent's brings one electron,
    n_e = li_per_fu_at_c0 (c/c0 - 1) per formula unit. The first li_per_fu_at_c0 (threshold - 1)
    of them are taken by O (the O share [Y14] argues for from the O-K peak "a" shift, which starts
    where Li starts to rise, while Ti stays 4+ up to ~6 c0); each further electron reduces one
    Ti4+ to Ti3+: f3 = clip((n_e - n_O) / n_Ti, 0, 1). LASGTP: 1.5 Li and 1.4 Ti per formula unit
    (sample.LASGTP), so f3 rises from 0 at 6.0 c0 to 1 at 6.93 c0; extraction undoes it in reverse
    order (Ti first), as [Y14] saw Ti go back to 4+ where Li fell below ~6 c0."""
    n_e = li_per_fu_at_c0 * (np.asarray(li_ratio, dtype=float) - 1.0)
    n_o = li_per_fu_at_c0 * (threshold - 1.0)
    return np.clip((n_e - n_o) / ti_per_fu, 0.0, 1.0)


def prepeak_amplitude(li_ratio: np.ndarray, k_pre: float = 0.1) -> np.ndarray:
    """A_pre/A_pre0 = max(0, 1 - k_pre (c/c0 - 1)) (physics.md §1.8), clipped to <= 1."""
    return np.clip(1.0 - k_pre * (np.asarray(li_ratio, dtype=float) - 1.0), 0.0, 1.0)


class Sample:
    """Layer stack + Li-dependent column state (see module docstring)."""

    def __init__(self, params: SampleParameters | None = None) -> None:
        self.params = params or SampleParameters.lasgtp_cell()
        p = self.params
        names = [layer.name for layer in p.layers]
        i0 = names.index(p.origin_layer)
        start = -sum(layer.thickness_m for layer in p.layers[:i0])
        edges = [start]
        for layer in p.layers:
            edges.append(edges[-1] + layer.thickness_m)
        self.layer_edges_m = np.array(edges)
        self._origin_index = i0
        self.has_electrode = p.electrode_thickness_m > 0
        self.layer_names: tuple[str, ...] = tuple(names) + (("electrode",) if self.has_electrode else ())
        mats = [layer.material for layer in p.layers]
        if self.has_electrode:
            origin = p.layers[i0].material
            mats.append(origin.model_copy(update={"name": origin.name + " (in-situ electrode, amorphous)",
                                                   "plasmon_width_eV": p.electrode_plasmon_width_eV}))
        self.layer_materials: tuple[Material, ...] = tuple(mats)
        self.elements: tuple[str, ...] = tuple(sorted({el for m in mats for el in m.formula}))

    # ------------------------------------------------------------------------------------------- geometry
    def layer_index(self, y_m: np.ndarray) -> np.ndarray:
        """Index into :attr:`layer_names` for each position."""
        y = np.asarray(y_m, dtype=float)
        idx = np.clip(np.searchsorted(self.layer_edges_m, y, side="right") - 1, 0, len(self.params.layers) - 1)
        if self.has_electrode:
            in_el = (idx == self._origin_index) & (y >= 0.0) & (y < self.params.electrode_thickness_m)
            idx = np.where(in_el, len(self.params.layers), idx)
        return idx

    @staticmethod
    def pixel_positions_m(n_rows: int = 330, pixel_m: float = 5.70e-9, start_m: float = -400e-9) -> np.ndarray:
        """Row centres along y, m ([Y14]: 330 pixels of 5.70 nm = 1880 nm)."""
        return start_m + pixel_m * (np.arange(n_rows) + 0.5)

    def reference_li_ratio(self, y_m: np.ndarray) -> np.ndarray:
        """End-of-cycling profile of [Y14] (§3.5 relaxed pulse): c/c0 = 1 + 7.5 exp(-(y/251 nm)^2) for y >= 0
        in Li-host layers (8.5 c0 at Pt, 6 c0 at 160 nm), 1 elsewhere."""
        y = np.asarray(y_m, dtype=float)
        p = self.params
        excess = (p.reference_peak_ratio - 1.0) * np.exp(-((y / p.reference_width_m) ** 2))
        return np.where(y >= 0, 1.0 + excess, 1.0)

    # ------------------------------------------------------------------------------------------- columns
    def column_state(
        self,
        y_m: np.ndarray,
        li_ratio: np.ndarray | float = 1.0,
        *,
        E0_eV: float = 300e3,
        alpha_rad: float = 0.5e-3,
        beta_rad: float = 10e-3,
        li_retained: float = 1.0,
    ) -> ColumnState:
        """Column state at positions ``y_m`` with Li ratio c/c0 ``li_ratio`` (same shape, or scalar).

        Li-host layers hold ``li_ratio`` x their parent Li (``li_per_fu_at_c0`` per formula unit); other
        layers ignore it. ``li_retained``: fraction of that Li still in the column after knock-on loss
        under the beam (physics.md §5); it scales the Li areal density only, while the Ti3+ fraction,
        O-O distance and O pre-peak follow ``li_ratio`` (simplification: the host does not relax
        during the run). t/lambda uses Iakoubovskii's mean free path (§1.4) at the local density, with the
        finite-aperture correction for ``alpha_rad``/``beta_rad``.
        """
        y = np.asarray(y_m, dtype=float)
        c = np.broadcast_to(np.asarray(li_ratio, dtype=float), y.shape).copy()
        p = self.params
        idx = self.layer_index(y)
        n_layers = len(self.layer_materials)
        host = np.array([layer.li_host for layer in p.layers] + ([True] if self.has_electrode else []))
        c_eff = np.where(host[idx], c, 1.0)
        t = np.full(y.shape, p.thickness_m)

        areal = {el: np.zeros(y.shape) for el in self.elements}
        rho = np.zeros(y.shape)
        for k in range(n_layers):
            sel = idx == k
            if not np.any(sel):
                continue
            m = self.layer_materials[k]
            fu_per_m3 = m.density_g_cm3 * 1e6 / m.molar_mass_g_mol * AVOGADRO  # formula units per m^3
            li0 = m.formula.get("Li", 0.0) if m.li_per_fu_at_c0 is None else m.li_per_fu_at_c0
            li_fixed = m.formula.get("Li", 0.0) - li0 if m.li_per_fu_at_c0 is None else m.formula.get("Li", 0.0)
            for el, n in m.formula.items():
                if el != "Li":
                    areal[el][sel] = n * fu_per_m3 * t[sel]
            li_per_fu = li_fixed + li0 * c_eff[sel]
            if "Li" in areal:
                areal["Li"][sel] = (li_fixed + li0 * c_eff[sel] * li_retained) * fu_per_m3 * t[sel]
            # constant volume: the density grows by the mass of the added Li (simplification, named above)
            d_li = li_per_fu - m.formula.get("Li", 0.0)
            rho[sel] = m.density_g_cm3 * (1.0 + d_li * ATOMIC_MASS_g_mol["Li"] / m.molar_mass_g_mol)

        tl = t / imfp_m(rho, E0_eV, alpha_rad, beta_rad)
        tl_all = t / imfp_iakoubovskii_m(rho, E0_eV)
        ep = np.array([m.plasmon_eV for m in self.layer_materials])[idx]
        dep = np.array([m.plasmon_width_eV for m in self.layer_materials])[idx]
        ti = areal.get("Ti")
        has_ti = ti > 0 if ti is not None else np.zeros(y.shape, bool)
        f3 = np.zeros(y.shape)
        for k in range(n_layers):
            m = self.layer_materials[k]
            sel = (idx == k) & has_ti
            if np.any(sel):
                li0 = m.formula.get("Li", 0.0) if m.li_per_fu_at_c0 is None else m.li_per_fu_at_c0
                f3[sel] = ti3_fraction(c_eff[sel], p.ti3_threshold, li0, m.formula["Ti"])
        ox: dict[str, np.ndarray] = {}
        for k, m in enumerate(self.layer_materials):
            for el, state in m.valence_states.items():
                ox.setdefault(el, np.full(y.shape, np.nan))[idx == k] = state
        return ColumnState(
            y_m=y,
            li_ratio=c_eff,
            layer_index=idx,
            layer_names=self.layer_names,
            areal_density_per_m2=areal,
            thickness_m=t,
            density_g_cm3=rho,
            t_over_lambda=tl,
            t_over_lambda_all=tl_all,
            f_ti3=f3,
            R_nm=o_o_distance_nm(c_eff, p.R_parent_nm, p.R_electrode_nm, p.R_saturation_ratio),
            prepeak_amplitude=prepeak_amplitude(c_eff, p.prepeak_k),
            plasmon_energy_eV=ep,
            plasmon_width_eV=dep,
            layer_materials=self.layer_materials,
            oxidation_state=ox,
        )




# ------------------------------------------------------------------------------------- phase columns
#: vacuum between and beyond particles: no atoms, no valence loss (its plasmon energy is never used
#: because its path contributes nothing; the Material needs a positive density and some energy)
VACUUM = Material(name="vacuum", formula={}, density_g_cm3=1e-9, plasmon_energy_eV=1.0, plasmon_width_eV=1.0)


def column_from_phases(
    y_m: np.ndarray,
    phase_path_m: np.ndarray,
    phases: tuple[Material, ...],
    *,
    li_retained: float = 1.0,
    E0_eV: float = 300e3,
    alpha_rad: float = 0.5e-3,
    beta_rad: float = 10e-3,
) -> ColumnState:
    """Column state of rows that cross several phases (path lengths ``phase_path_m``, m, (rows, phases)).

    Every phase is a :class:`Material` whose formula is its actual composition (Li included) and
    whose density is its own (so Li insertion with its volume expansion is a change of phase or of
    path length, never Li added at constant volume). Areal densities are sum_p n_p L_p; density is
    areal mass / thickness; t/lambda = sum_p L_p / lambda(rho_p) (§1.4 per phase); the plasmon energy
    and width reported per row are the path-weighted means over the phases with a valence loss
    (for display and ground truth; the phase paths are the full description). ``li_retained`` scales
    the Li the beam leaves (knock-on, physics.md §5). No Ti chemistry (f_ti3 = 0, R and pre-peak at
    their parent values).
    """
    y = np.asarray(y_m, dtype=float)
    L = np.asarray(phase_path_m, dtype=float)
    if L.shape != (y.size, len(phases)):
        raise ValueError(f"phase_path_m shape {L.shape} != ({y.size}, {len(phases)})")
    elements = sorted({el for m in phases for el in m.formula})
    areal = {el: np.zeros(y.shape) for el in elements}
    mass = np.zeros(y.shape)  # g/m^2
    tl = np.zeros(y.shape)
    tl_all = np.zeros(y.shape)
    ep_w = np.zeros(y.shape)
    dep_w = np.zeros(y.shape)
    w_sum = np.zeros(y.shape)
    tl_phase = np.zeros(L.shape)
    ox_sum: dict[str, np.ndarray] = {}
    ox_atoms: dict[str, np.ndarray] = {}
    for k, m in enumerate(phases):
        Lk = L[:, k]
        if not m.formula or not np.any(Lk > 0):
            continue
        fu_per_m3 = m.density_g_cm3 * 1e6 / m.molar_mass_g_mol * AVOGADRO
        for el, n in m.formula.items():
            areal[el] += n * fu_per_m3 * Lk * (li_retained if el == "Li" else 1.0)
        for el, state in m.valence_states.items():
            a = m.formula[el] * fu_per_m3 * Lk
            ox_sum[el] = ox_sum.get(el, 0.0) + a * state
            ox_atoms[el] = ox_atoms.get(el, 0.0) + a
        mass += m.density_g_cm3 * 1e6 * Lk
        lam = float(imfp_m(m.density_g_cm3, E0_eV, alpha_rad, beta_rad))
        tl += Lk / lam
        tl_all += Lk / float(imfp_iakoubovskii_m(m.density_g_cm3, E0_eV))
        w = Lk / lam
        tl_phase[:, k] = w
        ep_w += w * m.plasmon_eV
        dep_w += w * m.plasmon_width_eV
        w_sum += w
    t = L.sum(axis=1)
    rho = np.where(t > 0, mass / np.where(t > 0, t, 1.0) / 1e6, 0.0)
    idx = np.where(t > 0, np.argmax(L, axis=1), _vacuum_index(phases, L))
    safe = np.where(w_sum > 0, w_sum, 1.0)
    li = areal.get("Li", np.zeros(y.shape))
    return ColumnState(
        y_m=y,
        li_ratio=np.ones(y.shape),
        layer_index=idx.astype(np.intp),
        layer_names=tuple(m.name for m in phases),
        areal_density_per_m2=areal,
        thickness_m=t,
        density_g_cm3=rho,
        t_over_lambda=tl,
        t_over_lambda_all=tl_all,
        f_ti3=np.zeros(y.shape),
        R_nm=np.full(y.shape, 0.280),
        prepeak_amplitude=np.ones(y.shape),
        plasmon_energy_eV=np.where(w_sum > 0, ep_w / safe, np.nan),
        plasmon_width_eV=np.where(w_sum > 0, dep_w / safe, np.nan),
        layer_materials=tuple(phases),
        phase_path_m=L,
        phase_t_over_lambda=tl_phase,
        oxidation_state={el: np.where(ox_atoms[el] > 0, ox_sum[el] / np.where(ox_atoms[el] > 0, ox_atoms[el], 1.0),
                                      np.nan) for el in ox_sum},
        li_per_m3=np.where(t > 0, li / np.where(t > 0, t, 1.0), 0.0),
    )


def _vacuum_index(phases: tuple[Material, ...], L: np.ndarray) -> np.ndarray:
    """Index of the vacuum phase (rows with no matter), else 0."""
    for k, m in enumerate(phases):
        if not m.formula:
            return np.full(L.shape[0], k)
    return np.zeros(L.shape[0], dtype=int)
