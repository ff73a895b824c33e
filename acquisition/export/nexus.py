"""Spectrum images, exposures and the electrochemical record as NeXus NXem.

The layout follows the NXem application definition of the NeXus FAIRmat definitions (as shipped
with pynxtools, which the tests use to validate the file):

    /entry1                      NXentry, definition = "NXem", start_time, end_time
      experiment_description     the protocol's description
      program1                   NXprogram: insitem and its version
      sample1                    NXsample: name, atom_types, is_simulation, description
      measurement                NXem_measurement
        instrument               NXem_instrument: name, fabrication, ebeam_column (high
                                 tension), sensor_potential / sensor_current (NXsensor with an
                                 NXlog of the whole electrochemical record)
        event<k>                 NXem_event_data, one per exposure (k = 1, 2, ... in time order):
                                 start_time, end_time, and spectrum_<window>/spectrum_1d (NXdata:
                                 intensity over axis_i (position along the slit) x axis_energy)
                                 and electrochemistry (NXcollection: exposure time, potential,
                                 current, dose, energy offset, cycle and step of that exposure)

Times are ISO 8601 in UTC (see `timebase` for dry runs on a virtual clock). Intensities are the
run file's float32 counts; positions in the window's units (nm unless calibrated otherwise).
Exposures are copied one at a time, so memory stays at one spectrum image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from insitem.acquisition.export.timebase import iso_utc, unix_origin_s
from insitem.acquisition.runfile_read import RunFileReader, open_run

_ELEMENT_SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se "
    "Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy "
    "Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi"
).split()


def _group(parent: h5py.Group, name: str, nx_class: str) -> h5py.Group:
    g = parent.create_group(name)
    g.attrs["NX_class"] = nx_class
    return g


def _text(g: h5py.Group, name: str, value: str) -> None:
    g.create_dataset(name, data=value, dtype=h5py.string_dtype("utf-8"))


def _number(g: h5py.Group, name: str, value: Any, units: str | None = None) -> h5py.Dataset:
    ds = g.create_dataset(name, data=value)
    if units is not None:
        ds.attrs["units"] = units
    return ds


def _protocol(reader: RunFileReader) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(reader.protocol_text)
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _atom_types(protocol: dict[str, Any], windows: list[str]) -> str:
    """Elements named by the protocol's windows (their edges, e.g. `Li-K`, `Ti-L2,3`)."""
    spectrometer = protocol.get("spectrometer") or {}
    found: list[str] = []
    for w in spectrometer.get("windows") or []:
        for edge in (w or {}).get("edges") or []:
            symbol = str(edge).split("-", 1)[0].strip()
            if symbol in _ELEMENT_SYMBOLS and symbol not in found:
                found.append(symbol)
    return ", ".join(found) if found else "unknown"


def export_nexus(
    run_path: str | os.PathLike[str], out_path: str | os.PathLike[str], preparation_date: str | None = None
) -> Path:
    """Write the run as a NeXus NXem file at `out_path`; returns the path.

    `preparation_date` (ISO 8601 with UTC offset) is when the specimen was last prepared, which
    NXem requires and the run file does not know; without it the run's start is written, the
    latest moment the preparation can have ended.
    """
    out = Path(out_path)
    tmp = out.with_name(out.name + ".part")
    with open_run(run_path) as reader, h5py.File(tmp, "w") as nx:
        nx.attrs["default"] = "entry1"
        origin = unix_origin_s(reader)
        protocol = _protocol(reader)
        records = reader.exposure_records()
        ec = reader.electrochemistry()
        t_last = max([float(np.nanmax(ec["t_s"])) if ec["t_s"].size else 0.0]
                     + [float(t + e) for t, e in zip(records["t_start_s"], records["exposure_s"])])

        entry = _group(nx, "entry1", "NXentry")
        _text(entry, "definition", "NXem")
        _text(entry, "start_time", iso_utc(origin))
        _text(entry, "end_time", iso_utc(origin + t_last))
        _text(entry, "experiment_description", str(protocol.get("description") or reader.title))
        _text(entry, "experiment_alias", str(protocol.get("name") or reader.title))

        sample = _group(entry, "sample1", "NXsample")
        sample_desc = protocol.get("sample") or {}
        _text(sample, "name", str(sample_desc.get("description") or "battery specimen"))
        _text(sample, "atom_types", _atom_types(protocol, reader.windows))
        _text(sample, "preparation_date", preparation_date or iso_utc(origin))
        simulated = reader.config.ground_truth is not None
        _number(sample, "is_simulation", bool(simulated))

        measurement = _group(entry, "measurement", "NXem_measurement")
        instrument = _group(measurement, "instrument", "NXem_instrument")
        microscope = reader.instruments.get("microscope")
        _text(instrument, "name", str(microscope) if microscope is not None else "TEM")
        fab = _group(instrument, "fabrication", "NXfabrication")
        _text(fab, "vendor", microscope.vendor if microscope is not None else "unknown")
        _text(fab, "model", microscope.model if microscope is not None else "unknown")
        if microscope is not None and microscope.serial:
            _text(fab, "serial_number", microscope.serial)
        program = _group(instrument, "program1", "NXprogram")
        _text(program, "program", "insitem")
        program["program"].attrs["version"] = reader.software_version
        column = _group(instrument, "ebeam_column", "NXebeam_column")
        source = _group(column, "electron_source", "NXsource")
        _text(source, "emitter_type", "unknown")
        _number(source, "voltage", reader.config.beam_energy_keV * 1e3, "V")
        for name, column_name, units in (("potential", "voltage_V", "V"), ("current", "current_A", "A")):
            sensor = _group(instrument, f"sensor_{name}", "NXsensor")
            _text(sensor, "measurement", "voltage" if name == "potential" else "current")
            log = _group(sensor, "value_log", "NXlog")
            _number(log, "time", ec["t_s"], "s").attrs["start"] = iso_utc(origin)
            _number(log, "value", ec[column_name], units)

        order = np.argsort(records["t_start_s"], kind="stable")
        for k, row in enumerate(order, start=1):
            window = records["window"][row]
            window = window.decode() if isinstance(window, bytes) else str(window)
            t0, dt = float(records["t_start_s"][row]), float(records["exposure_s"][row])
            event = _group(measurement, f"event{k}", "NXem_event_data")
            _text(event, "start_time", iso_utc(origin + t0))
            _text(event, "end_time", iso_utc(origin + t0 + dt))
            _number(event, "identifier_event", k)
            conditions = _group(event, "electrochemistry", "NXcollection")
            for field, units in (("exposure_s", "s"), ("potential_V", "V"), ("current_A", "A"),
                                 ("dose_e_per_m2", "m-2"), ("total_dose_e_per_m2", "m-2"),
                                 ("energy_offset_eV", "eV")):
                _number(conditions, field, float(records[field][row]), units)
            _number(conditions, "cycle", int(records["cycle"][row]))
            _number(conditions, "step", int(records["step"][row]))
            spec = _group(event, f"spectrum_{window.replace('-', '_')}", "NXspectrum")
            data = _group(spec, "spectrum_1d", "NXdata")
            data.attrs["signal"] = "intensity"
            data.attrs["axes"] = ["axis_i", "axis_energy"]
            data.attrs["axis_i_indices"] = np.uint32(0)
            data.attrs["axis_energy_indices"] = np.uint32(1)
            _text(data, "title", f"{window} exposure {int(records['index'][row])}")
            spec_w = reader.window_spec(window)
            intensity = _number(data, "intensity", reader.exposure(window, int(records["index"][row])))
            intensity.attrs["long_name"] = "Counts"
            axis_i = _number(data, "axis_i", reader.position_axis(window), spec_w.position_units)
            axis_i.attrs["long_name"] = "Position along the slit"
            axis_e = _number(data, "axis_energy", reader.energy_axis_eV(window), "eV")
            axis_e.attrs["long_name"] = "Energy loss"
    os.replace(tmp, out)
    return out
