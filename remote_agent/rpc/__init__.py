"""The agent's wire protocol: JSON-RPC 2.0, one object per line."""
