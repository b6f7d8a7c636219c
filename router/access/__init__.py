"""Client keys and what they may do: scopes (models, pools), expiry, revocation, and
limits counted in a limit store (embedded across the workers of a host, or Redis across
servers)."""
