"""Flash-ACE's additions to the host's integrations (ASE)."""
