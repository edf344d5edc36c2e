"""StreamSpace: desktop applications streamed into the browser over VNC."""

__version__ = "0.1.0"
