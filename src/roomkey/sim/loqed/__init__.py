"""roomkey.sim.loqed."""
