"""GPU access: the backend over the ``pynvml`` interface, and the faithful fake of that module."""
