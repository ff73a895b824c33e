"""The wall-clock origin of a run: rig-clock seconds -> Unix seconds.

The run file records the rig clock (`t_s`, seconds since the run's time origin) for every row,
and the event log records both that clock and the wall clock for each event. The first event
fixes the mapping: unix = unix_event0 - t_event0 + t_s. On a hardware run the rig clock is the
monotonic clock, so this is the true wall time of each row. A dry run's rig clock is virtual
(a 125-hour protocol runs in seconds): its rows are placed on the wall clock as if the run had
taken its simulated time from the moment it started.
"""

from __future__ import annotations

import datetime as _dt

from insitem.acquisition.runfile_read import RunFileReader


def unix_origin_s(reader: RunFileReader) -> float:
    """Unix time (s) of rig-clock time 0; from the first event, else the file's creation time."""
    events = reader.events()
    if events:
        return events[0].unix_time_s - events[0].t_s
    created = reader._f.attrs.get("created_utc", b"")  # noqa: SLF001 - a file attribute
    created = created.decode() if isinstance(created, bytes) else str(created)
    try:
        return _dt.datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def iso_utc(unix_s: float) -> str:
    """ISO 8601 date and time in UTC with an explicit offset (NeXus NX_DATE_TIME)."""
    return _dt.datetime.fromtimestamp(unix_s, tz=_dt.timezone.utc).isoformat()
