"""Click commands: each module wires readers, policy and rendering together."""
