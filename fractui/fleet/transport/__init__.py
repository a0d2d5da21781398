"""The transports a host is reached by: base.py holds the interface, one module per kind
(ssh.py, local.py, exec.py), kinds.py picks one for a host entry."""
