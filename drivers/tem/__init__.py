"""TEM backend: the insitem TEM command set (`commands`), its client driver (`client.TemMicroscope`)
and the bridge server that maps it onto vendor APIs on the microscope PC (`bridge`)."""
