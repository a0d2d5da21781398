"""The one rule for a job's image reference, checked where a job is submitted (fractui: the CLI,
a queue's config) and where it is launched (the agent), so a job accepted on one side is never
refused on the other. Any reference a host's runtime takes passes: a registry's name:tag@digest,
an apptainer image's path (``/opt/x.sif``, ``./x.sif``); what can never be one is refused."""

from __future__ import annotations

from typing import Optional

MAX_IMAGE_LEN = 4096  # characters (PATH_MAX: an apptainer image is a path)


def image_problem(image: str) -> Optional[str]:
    """Why ``image`` can never name a job's image, or None: empty, too long, a leading '-' (the
    runtime's command would read it as an option), a space or a control character."""
    if not image:
        return "it is empty"
    if len(image) > MAX_IMAGE_LEN:
        return "it is longer than %d characters" % MAX_IMAGE_LEN
    if image.startswith("-"):
        return "it starts with '-' (the runtime would read it as an option)"
    if any(c.isspace() or not c.isprintable() for c in image):
        return "it holds a space or a control character"
    return None
