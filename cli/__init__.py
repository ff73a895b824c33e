"""The `insitem` command line (every command), a thin layer over `insitem.api` and the packages
below it; nothing in insitem imports it. Entry point: `insitem.cli.main:main`; also
``python -m insitem.cli``."""
