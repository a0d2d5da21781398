"""The Textual app: the live fleet as slice maps, queues and quota use.

``model`` (pure: host statuses and store jobs in, lines out) and ``bars`` (lines into styled
segments) know nothing of widgets, so the benchmark and tests can drive them directly; the
widgets and screens sit on top, one per file.
"""
