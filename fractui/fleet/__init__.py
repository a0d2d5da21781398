"""Reaching GPU hosts: SSH, the agent zipapp, host keys, host sessions."""
