"""Gatan GIF camera over the SerialEMCCD socket protocol: codec, byte channels, driver."""

from insitem.drivers.gif.camera import GifCamera, GifCameraConfig

__all__ = ["GifCamera", "GifCameraConfig"]
